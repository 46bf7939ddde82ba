#!/usr/bin/env bash
# lattice-runtime mesh checks beyond `cargo nextest run -p lattice-runtime` (which already runs the
# ring's unit tests and its two-thread stress test): the loom model of the SPSC ring and of the
# park/wake protocol (tests/loom_mesh.rs), with debug assertions on so the ring's invariant checks
# run under every explored interleaving (≈ 1.5 min first build in its own target dir, ≈ 1–2 s run).
# Needs only cargo (no packages, no services). Idempotent. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${CARGO_TARGET_DIR:=$PWD/target}"
export CARGO_TARGET_DIR

command -v cargo >/dev/null || { echo "mesh.sh: cargo not found; install a Rust toolchain (rustup)" >&2; exit 1; }

echo "== lattice-runtime mesh loom model (separate target dir: --cfg loom changes every artifact)"
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/loom-mesh" RUSTFLAGS="--cfg loom" \
  CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true \
  cargo test --release -p lattice-runtime --test loom_mesh
