#!/usr/bin/env bash
# One-command deploy of a built `lattice` binary and its configuration.
#
#   deploy/install.sh [--root DIR] [--binary PATH] [--config FILE] [--no-start]
#
# Installs, under DIR (default /):
#   usr/local/bin/lattice                     the binary (default: target/release/lattice)
#   etc/lattice/lattice.toml                  the configuration (default: deploy/lattice.prod.toml);
#                                             an existing one is kept and the new one written beside
#                                             it as lattice.toml.new
#   etc/systemd/system/lattice.service        the unit (deploy/lattice.service)
#   usr/local/share/doc/lattice/              OPERATIONS.md, the schema scripts
#   var/lib/lattice, var/log/lattice          state and logs, owned by the `lattice` user when it exists
# The configuration is checked with the new binary first (and an existing one it keeps); a bad one
# installs nothing (exit 2).
# With DIR = / (a real install) and systemd running, it reloads systemd, enables the unit and
# (re)starts it unless --no-start. With another DIR nothing outside DIR is touched (used by tests).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
root=/
binary="${CARGO_TARGET_DIR:-$repo/target}/release/lattice"
config="$here/lattice.prod.toml"
start=1
# die MESSAGE [EXIT_CODE]: the message alone on stderr, exit 1 unless a code is given (2: bad usage
# or configuration).
die() { echo "install.sh: $1" >&2; exit "${2:-1}"; }
# value OPTION WHAT ARG...: the argument after OPTION, which must be there and not be empty.
value() { [ $# -ge 3 ] && [ -n "$3" ] || die "$1 needs $2 (see --help)" 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --root) value "$1" "a directory" "${@:2}"; root="$2"; shift 2 ;;
    --binary) value "$1" "a path" "${@:2}"; binary="$2"; shift 2 ;;
    --config) value "$1" "a file" "${@:2}"; config="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" 2 ;;
  esac
done
[ -x "$binary" ] || die "no executable binary at $binary (build it: cargo build --release -p lattice-server)"
[ -f "$config" ] || die "no config file at $config"
"$binary" config --config "$config" >/dev/null || die "configuration $config is invalid; nothing installed" 2
root="${root%/}"
dest() { echo "$root$1"; }
# An existing, different configuration is kept (below): the new binary must accept it too, or the
# restarted service would exit 2, which systemd does not restart.
existing="$(dest /etc/lattice/lattice.toml)"
if [ -e "$existing" ] && ! cmp -s "$config" "$existing"; then
  "$binary" config --config "$existing" >/dev/null ||
    die "the existing $existing (kept over $config) is invalid for the new binary; fix or replace it; nothing installed" 2
fi

install -d -m 0755 "$(dest /usr/local/bin)" "$(dest /etc/lattice)" "$(dest /etc/systemd/system)" \
  "$(dest /usr/local/share/doc/lattice/schema)"
install -d -m 0750 "$(dest /var/lib/lattice)" "$(dest /var/log/lattice)"
# Replace the binary atomically (a running process keeps the old inode).
install -m 0755 "$binary" "$(dest /usr/local/bin/lattice.new)"
mv -f "$(dest /usr/local/bin/lattice.new)" "$(dest /usr/local/bin/lattice)"
if [ -e "$(dest /etc/lattice/lattice.toml)" ] && ! cmp -s "$config" "$(dest /etc/lattice/lattice.toml)"; then
  install -m 0640 "$config" "$(dest /etc/lattice/lattice.toml.new)"
  echo "install.sh: kept the existing /etc/lattice/lattice.toml; the new one is lattice.toml.new"
else
  install -m 0640 "$config" "$(dest /etc/lattice/lattice.toml)"
fi
install -m 0644 "$here/lattice.service" "$(dest /etc/systemd/system/lattice.service)"
install -m 0644 "$repo/docs/OPERATIONS.md" "$(dest /usr/local/share/doc/lattice/OPERATIONS.md)"
install -m 0755 "$here"/schema/*.sh "$(dest /usr/local/share/doc/lattice/schema/)"
if getent passwd lattice >/dev/null && [ "$(id -u)" = 0 ]; then
  chown lattice:lattice "$(dest /var/lib/lattice)" "$(dest /var/log/lattice)"
  chgrp lattice "$(dest /etc/lattice/lattice.toml)"
fi
echo "install.sh: installed $("$(dest /usr/local/bin/lattice)" --version) under ${root:-/}"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  getent passwd lattice >/dev/null || die "no lattice user: run deploy/init-env.sh first"
  systemctl daemon-reload
  systemctl enable lattice.service
  if [ "$start" = 1 ]; then
    systemctl restart lattice.service
    systemctl --no-pager --lines=5 status lattice.service || true
  fi
fi
