#!/usr/bin/env bash
# TypeScript client checks: installs the npm packages of proto/ts-test with `npm ci`
# (committed package-lock.json), type-checks the generated client + example + tests with
# `tsc --noEmit`, then runs the golden-vector and scripted-transport tests under Node, and the live
# tests (the client resuming against a real `lattice` built here, over TCP; LATTICE_BIN).
#
# Idempotent; runs as root on a fresh Debian 12 (installs nodejs + npm from apt when `node` is
# missing; Debian 12 ships Node 18, which is enough; Node 20 is what CI uses here).
# Env: LATTICE_UPDATE_GOLDEN=1 rewrites proto/ts-test/golden/ts-frames.json instead of comparing.
# Runtime: 51 s wall, 22 s CPU on the shared 2-core dev machine (warm npm cache; 4 tsc runs dominate).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$root/proto/ts-test"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ts.sh: installing nodejs and npm with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
  else
    echo "ts.sh: node and npm are required (Debian: apt-get install nodejs npm; Node >= 18)" >&2
    exit 1
  fi
fi

major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
  echo "ts.sh: Node >= 18 is required, found $(node --version)" >&2
  exit 1
fi

cd "$dir"
npm ci --no-audit --no-fund --ignore-scripts
echo "ts.sh: tsc --noEmit (generated client proto/ts, fixture, example, tests; Node typings)"
npx --no-install tsc -p tsconfig.json --noEmit
echo "ts.sh: tsc --noEmit (client + example as a browser bundle: DOM, ESM, no Node typings)"
npx --no-install tsc -p tsconfig.browser.json
echo "ts.sh: tsc --noEmit (client + example as a mini-game: no DOM, no Node typings, CommonJS)"
npx --no-install tsc -p tsconfig.minigame.json
echo "ts.sh: the demo bundle the server embeds (shards/src/http/demo/lattice.js) is the one esbuild builds now"
bundle="$root/shards/src/http/demo/lattice.js"
committed="$(mktemp)"
cp "$bundle" "$committed"
npm run -s bundle >/dev/null 2>&1 || { cp "$committed" "$bundle"; echo "ts.sh: npm run bundle failed" >&2; exit 1; }
if ! cmp -s "$committed" "$bundle"; then
  echo "ts.sh: shards/src/http/demo/lattice.js is stale: run \`npm run bundle\` in proto/ts-test and commit it" >&2
  exit 1
fi
rm -f "$committed"
echo "ts.sh: building the lattice binary for the live tests (client against a real server over TCP)"
(cd "$root" && cargo build -q -p lattice-server --bin lattice)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8")).target_directory)')"
export LATTICE_BIN="$target_dir/debug/lattice"
echo "ts.sh: node tests"
rm -rf build
npm test
