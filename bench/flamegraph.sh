#!/usr/bin/env bash
# Records lattice under lattice-load with `perf record -e cpu-clock` and renders a flame graph SVG
# with inferno. Installs linux-perf (Debian) and inferno (cargo) when missing.
#
#   bench/flamegraph.sh [OUT.svg] [SECONDS] [extra lattice overrides...]
#   e.g. bench/flamegraph.sh /tmp/lattice.svg 10 --echo.route remote --runtime.shards 2
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/flamegraph.svg}
secs=${2:-10}
shift $(( $# > 2 ? 2 : $# )) || true
if ! command -v perf >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null; then
  cargo install inferno --locked -q
fi
cargo build --release -q -p lattice-server -p lattice-bench
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 0 "$target/lattice" run --net.listen "127.0.0.1:$port" --admin.listen "" --listeners.http "" \
  --runtime.shards 1 --log.level warn "$@" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
data=$(mktemp /tmp/lattice-perf.XXXXXX)
for i in 1 2; do
  taskset -c 1 "$target/lattice-load" --addr "127.0.0.1:$port" --connections 25 --depth 16 \
    --duration "$((secs + 2))" --warmup 1 --quiet >/dev/null &
done
sleep 1
perf record -e cpu-clock -F 999 -g -p "$server" -o "$data" -- sleep "$secs" 2>/dev/null
wait %2 %3 2>/dev/null || true
perf script -i "$data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$out"
rm -f "$data"
echo "flame graph: $out"
