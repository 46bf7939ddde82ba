#!/usr/bin/env bash
# Side-by-side benchmark of lattice against the tokio baseline echo server (same frame format, same
# harness settings, alternating runs). Prints each figure and the ratio. See bench/README.md.
#
#   bench/compare.sh [--reps 3] [--duration 10] [--rate 60000] [--idle 10000] [--only echo,mesh,idle]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p lattice-server -p lattice-bench
exec python3 bench/compare.py "$@"
