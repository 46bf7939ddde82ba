#!/usr/bin/env bash
# Self instructions per round trip of the code under one source path, from the callgrind outputs
# that `bench/callgrind.sh --keep DIR` kept: every line of that path counts wherever the compiler
# inlined it (a crate's own cost, which the whole-process figure hides in its run-to-run spread).
#
#   bench/callgrind_self.sh DIR ROUND_TRIPS [PATH]
#
# ROUND_TRIPS is what callgrind.sh printed for that run; PATH defaults to core/wire/src/ (the
# sans-IO session). The result is (load − idle) ÷ round trips, like callgrind.sh's.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/callgrind_self.sh DIR ROUND_TRIPS [PATH]" >&2; exit 2; }
dir=$1; rts=$2; path=${3:-core/wire/src/}
command -v callgrind_annotate >/dev/null || { echo "callgrind_self.sh: install valgrind (apt-get install valgrind)" >&2; exit 1; }
for f in "$dir/cg.load" "$dir/cg.idle"; do
  [ -f "$f" ] || { echo "callgrind_self.sh: $f missing (run bench/callgrind.sh --keep $dir)" >&2; exit 1; }
done
sum() { # self instructions of the lines under $path in one output
  callgrind_annotate --inclusive=no --auto=no --threshold=100 "$1" 2>/dev/null |
    awk -v p="$path" 'index($0, p) { x = $1; gsub(",", "", x); s += x } END { print s + 0 }'
}
load=$(sum "$dir/cg.load"); idle=$(sum "$dir/cg.idle")
python3 -c "import sys; l, i, r = map(int, sys.argv[1:4]); print(f'{sys.argv[4]}: {(l - i) / max(r, 1):.1f} self instructions per round trip')" \
  "$load" "$idle" "$rts" "$path"
