#!/usr/bin/env bash
# WebSocket conformance: the Autobahn testsuite (`wstest -m fuzzingclient`) against a started
# lattice's WebSocket echo endpoint (http.ws_echo_path: the same WebSocket code as /ws, echoing
# messages instead of carrying frames), then every case's result parsed from the JSON reports.
#
#   tests/autobahn.sh [check|bench]
#     check (CI, the default): sections 1-7 and 10 must all be OK, NON-STRICT or INFORMATIONAL
#       (behavior and behaviorClose), none FAILED; sections 12-13 (permessage-deflate, declined)
#       must be UNIMPLEMENTED.
#     bench: section 9 (large messages, performance); prints a table of every case's duration and
#       behavior (bench/README.md keeps the results).
#
# Needs Python 2.7 (pyenv's 2.7.18 here, found with `pyenv prefix 2.7.18`, or python2.7 on PATH):
# the suite is Python 2 code. Its sdist installs no dependencies, so the pins from its
# requires.txt are installed by hand with pip --target into a private directory (no virtualenv
# module in that Python). Idempotent: an existing install is reused. Fails loudly when Python 2.7
# is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-check}"
# Where cargo puts binaries (CARGO_TARGET_DIR, a target-dir in cargo's config, or ./target).
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

py=""
if command -v pyenv >/dev/null 2>&1 && pyenv prefix 2.7.18 >/dev/null 2>&1; then
  py="$(pyenv prefix 2.7.18)/bin/python2.7"
elif command -v python2.7 >/dev/null 2>&1; then
  py="$(command -v python2.7)"
fi
if [ -z "$py" ] || ! "$py" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
  echo "autobahn.sh: Python 2.7 is required for the Autobahn testsuite and was not found" >&2
  echo "  (install it with pyenv: \`pyenv install 2.7.18\`, or put python2.7 on PATH)" >&2
  exit 1
fi

deps="${AUTOBAHN_DIR:-$HOME/.cache/lattice-autobahn}"
# pip --target leaves namespace packages (zope.*) to .pth files, which only site.addsitedir reads.
run_py() { "$py" -c "import site, sys; site.addsitedir('$deps'); sys.argv = ['wstest'] + sys.argv[1:]; $1" "${@:2}"; }
if ! run_py 'import autobahntestsuite, twisted, autobahn, zope.interface' 2>/dev/null; then
  echo "autobahn.sh: installing autobahntestsuite and its pinned dependencies into $deps"
  mkdir -p "$deps"
  "$py" -m pip install -q --disable-pip-version-check --no-warn-script-location --target "$deps" \
    'Twisted==19.10.0' 'autobahn[twisted]==0.10.9' 'pyOpenSSL==19.1.0' 'cryptography==3.3.2' \
    'zope.interface==4.6.0' 'txaio==2.1.0' 'klein==17.10.0' 'jinja2==2.11.3' 'MarkupSafe==1.1.1' \
    'werkzeug==1.0.1' 'service_identity==18.1.0' 'unittest2==1.1.0' 'six==1.16.0' \
    'attrs==21.4.0' 'pyasn1==0.4.8' 'pyasn1-modules==0.2.8' 'cffi==1.15.1' 'enum34==1.1.10' \
    'ipaddress==1.0.23' 'incremental==21.3.0' 'constantly==15.1.0' 'Automat==20.2.0' \
    'hyperlink==21.0.0' 'PyHamcrest==1.10.1' 'idna==2.10' 'typing==3.10.0.0' 'linecache2==1.0.0' \
    'traceback2==1.4.0' 'argparse==1.4.0' 'pycparser==2.21'
  "$py" -m pip install -q --disable-pip-version-check --no-warn-script-location --no-deps \
    --target "$deps" 'autobahntestsuite==0.8.2'
fi

cargo build --release -q -p lattice-server --manifest-path "$root/Cargo.toml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d /tmp/lattice-autobahn.XXXXXX)
# Section 9 sends messages of up to 16 MiB and reads the echo only when it is complete.
"$target/release/lattice" run --net.listen "" --admin.listen "" \
  --listeners.http "127.0.0.1:$port" --http.ws_echo_path /echo \
  --net.max_frame 16777216 --net.send_buffer_limit 67108864 --runtime.shards 1 \
  --storage.data_dir "$work/data" --log.level warn >"$work/lattice.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.05; done

case "$mode" in
  check) cases='["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*", "12.*", "13.*"]' ;;
  bench) cases='["9.*"]' ;;
  *) echo "usage: autobahn.sh [check|bench]" >&2; exit 2 ;;
esac
cat >"$work/spec.json" <<EOF
{
  "outdir": "$work/reports",
  "servers": [{ "agent": "lattice", "url": "ws://127.0.0.1:$port/echo" }],
  "cases": $cases,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
echo "autobahn.sh: wstest -m fuzzingclient, cases $cases"
(cd "$work" && run_py 'from autobahntestsuite.wstest import run; run()' -m fuzzingclient -s spec.json \
  >"$work/wstest.log" 2>&1) || { echo "autobahn.sh: wstest failed:"; tail -30 "$work/wstest.log"; exit 1; }
kill -TERM "$server"; wait "$server" || { echo "autobahn.sh: lattice exited non-zero"; tail -20 "$work/lattice.log"; exit 1; }
trap - EXIT

python3 - "$work/reports/index.json" "$mode" <<'PY'
import json, sys
index = json.load(open(sys.argv[1]))["lattice"]
mode = sys.argv[2]
def key(c):
    return [int(x) for x in c.split(".")]
bad, counts = [], {}
for case in sorted(index, key=key):
    r = index[case]
    b, bc = r["behavior"], r.get("behaviorClose", "")
    section = int(case.split(".")[0])
    counts[(b, bc)] = counts.get((b, bc), 0) + 1
    if mode == "bench":
        print(f"| {case} | {b} | {bc} | {r.get('duration', 0)} ms |")
        continue
    if section in (12, 13):
        if b != "UNIMPLEMENTED":
            bad.append(f"{case}: {b} (permessage-deflate is declined: expected UNIMPLEMENTED)")
    elif b not in ("OK", "NON-STRICT", "INFORMATIONAL") or bc not in ("OK", "INFORMATIONAL", "NON-STRICT"):
        bad.append(f"{case}: behavior {b}, close {bc}")
print(f"autobahn.sh: {len(index)} cases: " + ", ".join(f"{n} {b}/{bc}" for (b, bc), n in sorted(counts.items())))
if bad:
    print("autobahn.sh: cases that failed:")
    for b in bad:
        print("  " + b)
    sys.exit(1)
print(f"autobahn: {len(index)} passed, 0 failed")
PY
rm -rf "$work"
