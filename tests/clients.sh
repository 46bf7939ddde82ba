#!/usr/bin/env bash
# Real clients against a real lattice (docs/PROTOCOL.md "WebSocket"): the demo page in headless
# Chromium (playwright-core) chatting with a Python `websockets` client, and the generated
# TypeScript client in Node through a mini-game transport adapter; the operations console
# (`GET /console` on the admin listener) in headless Chromium.
#
# Installs what is missing (idempotent), failing loudly when it cannot: Debian's chromium, Python's
# websockets (pip), the npm packages of proto/ts-test (`npm ci`). Then builds lattice (release)
# and runs proto/ts-test/live/*.test.ts under `node --test`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Where cargo puts binaries (CARGO_TARGET_DIR, a target-dir in cargo's config, or ./target).
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "clients.sh: installing chromium from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium
  else
    echo "clients.sh: Chromium is required at /usr/bin/chromium (Debian: apt-get install chromium)" >&2
    exit 1
  fi
fi
if ! python3 -c 'import websockets.sync.client' 2>/dev/null; then
  echo "clients.sh: installing the Python websockets package"
  python3 -m pip install -q 'websockets==15.0.1' || {
    echo "clients.sh: Python's websockets package is required (pip install websockets)" >&2
    exit 1
  }
fi
command -v node >/dev/null || { echo "clients.sh: node is required (deploy/ci/ts.sh installs it)" >&2; exit 1; }

cargo build --release -q -p lattice-server --manifest-path "$root/Cargo.toml"
cd "$root/proto/ts-test"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --ignore-scripts
rm -rf build-live
npx --no-install tsc -p tsconfig.live.json
LATTICE_BIN="$target/release/lattice" node --test build-live/ts-test/live/
