#!/usr/bin/env bash
# One 2-shard echo run with the mesh counters and the kernel's view of it: server CPU per round
# trip (utime + stime from /proc), mesh wake-ups, loop passes and mesh sends per round trip
# (from /metrics), and context switches, parks and eventfd writes over 3 s of the run
# (`perf stat`; needs linux-perf: `apt-get install linux-perf`).
#
#   bench/mesh_run.sh DIR ROUTE RATE [lattice run overrides…]
#
# DIR holds `lattice` and `lattice-load` (a release build); ROUTE is `local` or `remote`
# (`echo.route`); RATE is the total open-loop rate. Same setting as `compare.py --only mesh`:
# the server on cores 0–1 (2 pinned shards), two `lattice-load` processes on core 1, 25
# connections × 16 in flight each, 100-byte payloads, 4 s measured after 1 s of warm-up. Uses
# ports 7500/7501 and /tmp/lattice-mesh-run.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n 2,13p "$0" >&2
  exit 2
fi
dir=$1 route=$2 rate=$3
shift 3
command -v perf >/dev/null || { echo "mesh_run.sh: perf is required (apt-get install linux-perf)" >&2; exit 1; }
tmp=/tmp/lattice-mesh-run
rm -rf "$tmp" && mkdir -p "$tmp"
taskset -c 0,1 "$dir/lattice" run --net.listen 127.0.0.1:7500 --listeners.http "" --tls.listen "" \
  --tls.http_listen "" --admin.listen 127.0.0.1:7501 --runtime.shards 2 --echo.route "$route" \
  --log.level warn --storage.data_dir "$tmp/data" "$@" 2>"$tmp/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf 127.0.0.1:7501/healthz >/dev/null 2>&1 && break; sleep 0.1; done
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
c0=$(cpu)
loads=()
for i in 0 1; do
  taskset -c 1 "$dir/lattice-load" --addr 127.0.0.1:7500 --quiet --report "$tmp/load$i.json" \
    --connections 25 --depth 16 --payload 100 --duration 4 --warmup 1 --rate $((rate / 2)) \
    --max-errors 0 >/dev/null &
  loads+=($!)
done
perf stat -e context-switches,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_write \
  -p "$server" -o "$tmp/perf-stat.txt" -- sleep 3 &
perf_pid=$!
for p in "${loads[@]}"; do wait "$p" || { echo "mesh_run.sh: lattice-load failed" >&2; exit 1; }; done
wait "$perf_pid"
c1=$(cpu)
curl -sf 127.0.0.1:7501/metrics >"$tmp/metrics"
python3 - "$c0" "$c1" "$tmp" "$(getconf CLK_TCK)" <<'PY'
import json, sys
c0, c1, tmp, hz = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rt = sum(json.load(open(f"{tmp}/load{i}.json"))["responses"] for i in (0, 1))
m = open(f"{tmp}/metrics").read().splitlines()
def total(name):
    return sum(float(l.split()[-1]) for l in m if l.startswith(name + "{") or l.startswith(name + " "))
print(f"round trips {rt}  server CPU µs per round trip {(c1 - c0) / hz * 1e6 / rt:.2f}  per round trip: "
      f"mesh wake-ups {total('lattice_mesh_wakeups_total') / rt:.3f}, loop passes "
      f"{total('lattice_loop_passes_total') / rt:.3f}, mesh sends {total('lattice_mesh_sent_total') / rt:.3f}")
stat = {}
for l in open(f"{tmp}/perf-stat.txt"):
    p = l.split()
    if len(p) >= 2 and p[0].replace(",", "").isdigit():
        stat[p[1].replace("syscalls:sys_enter_", "")] = int(p[0].replace(",", ""))
print("over 3 s: " + ", ".join(f"{k} {v}" for k, v in stat.items()))
PY
