#!/usr/bin/env bash
# Instructions and simulated cache misses per operation of the Lattice timer wheel, counted by
# `valgrind --tool=callgrind` over exactly the timed loops of `bench/benches/timer.rs`
# (`lattice_insert_loop`, `lattice_cancel_loop`, `lattice_cancel_lookup_loop`, `lattice_remove_loop`,
# `lattice_churn_loop`, `lattice_expire_loop`; `--toggle-collect`).
# Counts are deterministic for a given binary, unlike times on this shared machine.
#
#   bench/timer_callgrind.sh [--bin PATH] [--only insert|cancel|cancel_handle_array|remove|churn|expire]
#                            [--keep DIR]
#
# --keep DIR keeps the callgrind outputs (DIR/cg.<loop>) for line-level costs:
#   callgrind_annotate --auto=yes DIR/cg.insert
#
# Cache model (this machine's per-core caches): D1 48 KiB 12-way, LL = the 2 MiB 16-way L2, 64-byte
# lines. "LL misses" are therefore reads and writes that leave the core's private caches — the
# accesses that cost tens of ns at 1 M timers. The shared L3 is not modelled.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""; only=""; keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "timer_callgrind.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "timer_callgrind.sh: install valgrind (apt-get install valgrind)" >&2; exit 1; }
if [ -z "$bin" ]; then
  bin=$(cargo bench -q -p lattice-bench --bench timer --no-run --message-format=json |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "timer":
        print(m["executable"])')
fi
[ -x "$bin" ] || { echo "timer_callgrind.sh: no timer bench binary (got '$bin')" >&2; exit 1; }
work=$(mktemp -d /tmp/lattice-timer-cg.XXXXXX)
trap 'rm -rf "$work"' EXIT

# name, bench scenario, timed function, operations in the timed loop, unit
cases=(
  "insert timer/insert/1M lattice_insert_loop 1000000 insert"
  "cancel timer/cancel/1M lattice_cancel_loop 1000000 cancel"
  "cancel_handle_array timer/cancel_handle_array/1M lattice_cancel_lookup_loop 1000000 cancel"
  "remove timer/remove/1M lattice_remove_loop 1000000 cancel"
  "churn timer/insert_cancel_90 lattice_churn_loop 1000000 timer"
  "expire timer/expire_bulk lattice_expire_loop 100000 fired"
)
printf '| loop | ops | Ir/op | D1 misses/op | LL misses/op (reads + writes) |\n|---|---:|---:|---:|---:|\n'
for c in "${cases[@]}"; do
  read -r name scenario func ops unit <<<"$c"
  if [ -n "$only" ] && [ "$only" != "$name" ]; then continue; fi
  out="$work/cg.$name"
  valgrind --tool=callgrind --cache-sim=yes --D1=49152,12,64 --LL=2097152,16,64 \
    --toggle-collect="*$func*" --callgrind-out-file="$out" \
    "$bin" --bench --reps 1 --only "$scenario" --impl lattice --no-mem >"$work/log.$name" 2>&1 ||
    { cat "$work/log.$name" >&2; exit 1; }
  if [ -n "$keep" ]; then mkdir -p "$keep" && cp "$out" "$keep/cg.$name"; fi
  python3 - "$out" "$ops" "$name" "$unit" <<'PY'
import sys
path, ops, name, unit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
events = summary = None
for line in open(path):
    if line.startswith("events:"):
        events = line.split()[1:]
    elif line.startswith("summary:") or line.startswith("totals:"):
        summary = [int(x) for x in line.split()[1:]]
v = dict(zip(events, summary))
d1 = v.get("D1mr", 0) + v.get("D1mw", 0)
ll = v.get("DLmr", 0) + v.get("DLmw", 0)
print(f"| {name} | {ops} | {v['Ir'] / ops:.1f} | {d1 / ops:.2f} | {ll / ops:.2f} ({v.get('DLmr', 0) / ops:.2f} + {v.get('DLmw', 0) / ops:.2f}) |")
PY
done
