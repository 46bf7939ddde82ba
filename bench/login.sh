#!/usr/bin/env bash
# The login load scenario against a release `lattice` on its own data directory:
#   bench/login.sh [--connections N] [--duration SECS] [--shards N] [lattice overrides…]
# Builds the release binaries, starts `lattice run` (SQLite in a fresh temp dir), runs
# `lattice-load --scenario login` (register, password login, token reconnect, and the plain
# reconnect baseline, each for --duration seconds), then prints the hash pool's measured cost per
# job from /metrics. Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=8 duration=10 shards=2
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) conns="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    *) break ;;
  esac
done
cargo build --release -q -p lattice-server -p lattice-bench
target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
bin="$target_dir/release"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d /tmp/lattice-login-bench.XXXXXX)
log="$data/server.log"
# listeners.http is off: the scenario speaks frames over TCP only, and port 7102 may be taken.
"$bin/lattice" run --net.listen "127.0.0.1:$port" --admin.listen "127.0.0.1:$admin" \
  --listeners.http "" --runtime.shards "$shards" --storage.data_dir "$data" "$@" >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
"$bin/lattice-load" --addr "127.0.0.1:$port" --scenario login --connections "$conns" \
  --duration "$duration" --report "$data/login.json" --max-errors 1000000
curl -fs "http://127.0.0.1:$admin/metrics" | python3 -c '
import sys
m = {}
for line in sys.stdin:
    if line.startswith("lattice_account_hash_"):
        k, v = line.rsplit(" ", 1); m[k] = float(v)
jobs = m.get("lattice_account_hash_jobs_total", 0)
secs = m.get("lattice_account_hash_busy_seconds_total", 0)
if jobs:
    print(f"hash pool: {int(jobs)} jobs, {secs / jobs * 1e3:.1f} ms of worker time per job")
'
