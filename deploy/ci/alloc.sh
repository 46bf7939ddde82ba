#!/usr/bin/env bash
# lattice-alloc checks beyond `cargo nextest run -p lattice-alloc` (which already runs the unit
# tests and a 400 000-operation debug stress run):
#   1. the full stress test: 10 M operations, 4 threads, release build (≈ 20–35 s here);
#   2. the loom model of the remote-free lanes (≈ 20 s build + < 1 s run).
# Needs only cargo (no packages, no services). Idempotent. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${CARGO_TARGET_DIR:=$PWD/target}"
export CARGO_TARGET_DIR
OPS="${LATTICE_ALLOC_STRESS_OPS:-10000000}"

command -v cargo >/dev/null || { echo "alloc.sh: cargo not found; install a Rust toolchain (rustup)" >&2; exit 1; }

echo "== lattice-alloc stress (release, ${OPS} ops)"
if cargo nextest --version >/dev/null 2>&1; then
  LATTICE_ALLOC_STRESS_OPS="$OPS" cargo nextest run --release -p lattice-alloc --test stress
else
  LATTICE_ALLOC_STRESS_OPS="$OPS" cargo test --release -p lattice-alloc --test stress
fi

echo "== lattice-alloc loom model (separate target dir: --cfg loom changes every artifact)"
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/loom-alloc" RUSTFLAGS="--cfg loom" \
  cargo test --release -p lattice-alloc --test loom_remote_free
