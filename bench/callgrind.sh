#!/usr/bin/env bash
# User-space instructions per echo round trip of a `lattice` binary, counted by
# `valgrind --tool=callgrind` — deterministic on a noisy machine, unlike CPU time.
#
#   bench/callgrind.sh [--bin DIR] [--shards N] [--route local|hash|remote] [--conns N] [--depth N]
#                      [--secs S] [--route-key echo.route] [--transport tcp|tls] [--keep DIR]
#                      [--server lattice|baseline]
#
# Two runs under callgrind: one under `lattice-load` for S seconds, one with the same connections
# open and idle for S seconds (so connecting, the TLS handshake and Hello cancel out); the result
# is (instructions with load − instructions idle) ÷ round trips. `--transport tls` serves and
# drives the frames over TLS 1.3 (a certificate from `lattice tool gen-cert`). DIR holds `lattice` and
# `lattice-load` (default: the release dir of this checkout's target dir). The epoll driver is used
# (valgrind does not model io_uring). Kernel work is not counted: this measures our code.
# --keep DIR copies both callgrind outputs there (cg.load, cg.idle) for `callgrind_annotate`.
# --server baseline counts the tokio baseline (`baseline-echo` from DIR, `--threads` = --shards)
# the same way, so the two figures of one session are a ratio (TCP only).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=""; shards=1; route=local; conns=8; depth=8; secs=8; route_key=echo.route; transport=tcp; keep=""; server=lattice
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) dir=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --route) route=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --depth) depth=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --route-key) route_key=$2; shift 2 ;;
    --transport) transport=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    *) echo "callgrind.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "callgrind.sh: install valgrind (apt-get install valgrind)" >&2; exit 1; }
if [ -z "$dir" ]; then
  cargo build --release -q -p lattice-server -p lattice-bench
  dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
fi
work=$(mktemp -d /tmp/lattice-callgrind.XXXXXX)
trap 'rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
tls_server=(); tls_load=(); target=$port
case "$transport" in
  tcp) ;;
  tls)
    "$dir/lattice" tool gen-cert --out "$work/cert" >/dev/null
    tls_port=$(free_port); target=$tls_port
    tls_server=(--tls.listen "127.0.0.1:$tls_port" --tls.cert "$work/cert/cert.pem"
                --tls.key "$work/cert/key.pem" --tls.handshake_timeout_ms 120000)
    tls_load=(--transport tls --tls-ca "$work/cert/cert.pem") ;;
  *) echo "callgrind.sh: --transport tcp or tls, got $transport" >&2; exit 2 ;;
esac

case "$server" in
  lattice) ;;
  baseline) [ "$transport" = tcp ] || { echo "callgrind.sh: --server baseline is TCP only" >&2; exit 2; } ;;
  *) echo "callgrind.sh: --server lattice or baseline, got $server" >&2; exit 2 ;;
esac

run() { # $1 = load|idle; prints "instructions round_trips"
  local out="$work/cg.$1"
  if [ "$server" = baseline ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out" "$dir/baseline-echo" \
      --listen "127.0.0.1:$port" --threads "$shards" >"$work/server.$1.log" 2>&1 &
  else
    # Listeners other than net.listen stay closed (their defaults bind fixed ports).
    valgrind --tool=callgrind --callgrind-out-file="$out" "$dir/lattice" run \
      --net.listen "127.0.0.1:$port" --admin.listen "" --runtime.shards "$shards" \
      --listeners.http "" --runtime.driver epoll --runtime.pin false --log.level warn \
      "--$route_key" "$route" --storage.data_dir "$work/data-$1" "${tls_server[@]}" \
      >"$work/server.$1.log" 2>&1 &
  fi
  local pid=$! rts=0
  for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$target") 2>/dev/null && break; sleep 0.1; done
  if [ "$1" = load ]; then
    "$dir/lattice-load" --addr "127.0.0.1:$target" --connections "$conns" --depth "$depth" \
      --duration "$secs" --quiet --report "$work/load.json" "${tls_load[@]}" >/dev/null 2>&1 || true
    rts=$(python3 -c "import json; print(json.load(open('$work/load.json'))['responses'])")
  else
    "$dir/lattice-load" --addr "127.0.0.1:$target" --connections "$conns" --scenario idle \
      --duration "$secs" --quiet "${tls_load[@]}" >/dev/null 2>&1 || true
  fi
  kill -TERM "$pid"; wait "$pid" || true
  echo "$(grep -m1 '^summary:' "$out" | awk '{print $2}') $rts"
}
read -r load rts < <(run load)
read -r idle _ < <(run idle)
if [ -n "$keep" ]; then mkdir -p "$keep"; cp "$work/cg.load" "$work/cg.idle" "$keep/"; fi
python3 - "$load" "$idle" "$rts" "$shards" "$route" "$conns" "$depth" "$transport" "$server" <<'PY'
import sys
load, idle, rts = (int(x) for x in sys.argv[1:4])
shards, route, conns, depth, transport, server = sys.argv[4:]
print(f"server={server} transport={transport} shards={shards} route={route} conns={conns} depth={depth}: {rts} round trips, "
      f"{(load - idle) / max(rts, 1):.0f} user-space instructions per round trip")
PY
