#!/usr/bin/env bash
# Checks the crate arrows of docs/ARCHITECTURE.md against `cargo tree` (normal dependencies):
#   lattice-wire     links no runtime, socket library, database or protobuf crate;
#   lattice-runtime  links no storage, database or protobuf crate;
#   lattice-storage  links no other lattice crate and no shard runtime;
#   lattice-proto    links no other lattice crate.
# Exits non-zero naming the crate and the forbidden dependency.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail=0
check() {
  local crate="$1"; shift
  local tree
  tree=$(cargo tree -q -p "$crate" -e normal --prefix none)
  for bad in "$@"; do
    if grep -qE "^$bad v" <<<"$tree"; then
      echo "arrows.sh: $crate must not depend on $bad (docs/ARCHITECTURE.md); path:" >&2
      cargo tree -q -p "$crate" -e normal -i "$bad" >&2 || true
      fail=1
    fi
  done
}

check lattice-wire monoio tokio rusqlite mysql_async lattice-runtime lattice-storage lattice-proto lattice-alloc prost
check lattice-runtime lattice-storage lattice-proto rusqlite mysql_async prost
check lattice-storage lattice-wire lattice-runtime lattice-proto lattice-alloc monoio
check lattice-proto lattice-wire lattice-runtime lattice-storage lattice-alloc
[ "$fail" = 0 ] && echo "arrows.sh: crate arrows hold"
exit "$fail"
