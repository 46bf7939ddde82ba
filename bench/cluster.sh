#!/usr/bin/env bash
# CPU per round trip gate -> logic over a node link (two processes) against the in-process mesh.
#   bench/cluster.sh [--reps 3] [--duration 10] [--rate 20000] [--connections 50] [--depth 4]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p lattice-server -p lattice-bench
exec python3 bench/cluster.py "$@"
