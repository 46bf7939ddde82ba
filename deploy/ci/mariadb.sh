#!/usr/bin/env bash
# Throwaway MariaDB for Lattice's storage tests and benchmark.
#
#   deploy/ci/mariadb.sh start [INSTANCE]   install mariadb-server if missing, start INSTANCE, create the
#                                           test database and user, print `export LATTICE_TEST_MYSQL_URL=...`
#   deploy/ci/mariadb.sh stop  [INSTANCE]   stop INSTANCE (data dir kept, so `start` again is fast)
#   deploy/ci/mariadb.sh url   [INSTANCE]   print the connection URL
#   deploy/ci/mariadb.sh status [INSTANCE]  exit 0 if INSTANCE answers
#   deploy/ci/mariadb.sh destroy [INSTANCE] stop INSTANCE and delete its data dir
#
# INSTANCE defaults to `main` (port 3307, or $LATTICE_MARIADB_PORT). The fault tests use their own instance `fault` (port 3308) so
# they can stop and start it without disturbing other tests. Each instance lives under
# ${LATTICE_MARIADB_ROOT:-/tmp/lattice-mariadb}/INSTANCE (data dir, socket, pid, log), listens on
# 127.0.0.1 only, and runs as root (this is a test server: no durability tuning worth keeping).
# Idempotent: `start` on a running instance only (re)creates the user and database.
# Usage in CI:  eval "$(deploy/ci/mariadb.sh start)"  ... tests ...  deploy/ci/mariadb.sh stop
set -euo pipefail

cmd="${1:-start}"
inst="${2:-main}"
root="${LATTICE_MARIADB_ROOT:-/tmp/lattice-mariadb}"
dir="$root/$inst"
case "$inst" in
  main) default_port=3307 ;;
  fault) default_port=3308 ;;
  *) default_port=$((3310 + $(printf '%s' "$inst" | cksum | cut -d' ' -f1) % 100)) ;;
esac
port="$default_port"
if [ "$inst" = main ] && [ -n "${LATTICE_MARIADB_PORT:-}" ]; then port="$LATTICE_MARIADB_PORT"; fi
user=lattice
pass=lattice
db=lattice_test
sock="$dir/mysqld.sock"
url="mysql://$user:$pass@127.0.0.1:$port/$db"

log() { echo "mariadb.sh[$inst]: $*" >&2; }

find_bin() {
  for b in "$@"; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
    for d in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
      [ -x "$d/$b" ] && { echo "$d/$b"; return 0; }
    done
  done
  return 1
}

install_if_missing() {
  if find_bin mariadbd mysqld >/dev/null && find_bin mariadb-install-db mysql_install_db >/dev/null \
     && find_bin mariadb mysql >/dev/null; then
    return 0
  fi
  log "installing mariadb-server from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # policy-rc.d keeps the package from starting its own system instance.
  local prc=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$prc" ]; then printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; created=1; fi
  apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >&2
  [ "$created" = 1 ] && rm -f "$prc"
  return 0
}

client() { "$(find_bin mariadb mysql)" --protocol=socket -S "$sock" -uroot "$@"; }

alive() { [ -S "$sock" ] && client -e 'SELECT 1' >/dev/null 2>&1; }

do_start() {
  install_if_missing
  mkdir -p "$dir"
  if alive; then
    log "already running on port $port"
  else
    if [ ! -d "$dir/data/mysql" ]; then
      log "initialising data dir $dir/data"
      rm -rf "$dir/data"
      "$(find_bin mariadb-install-db mysql_install_db)" --no-defaults --user=root --datadir="$dir/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 \
        || { cat "$dir/install.log" >&2; exit 1; }
    fi
    rm -f "$sock" "$dir/mysqld.pid"
    "$(find_bin mariadbd mysqld)" --no-defaults --user=root --datadir="$dir/data" \
      --socket="$sock" --pid-file="$dir/mysqld.pid" --port="$port" --bind-address=127.0.0.1 \
      --log-error="$dir/error.log" --skip-log-bin --innodb-buffer-pool-size=128M \
      --innodb-log-file-size=64M --innodb-flush-log-at-trx-commit=2 --max-connections=200 \
      --skip-name-resolve --max-allowed-packet=64M >/dev/null 2>&1 &
    local i
    for i in $(seq 1 300); do
      alive && break
      if ! kill -0 $! 2>/dev/null; then log "mysqld exited; see $dir/error.log"; tail -20 "$dir/error.log" >&2; exit 1; fi
      sleep 0.1
    done
    alive || { log "mysqld did not answer within 30 s; see $dir/error.log"; tail -20 "$dir/error.log" >&2; exit 1; }
    log "started on 127.0.0.1:$port (data $dir/data)"
  fi
  client <<SQL
CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '$pass';
CREATE USER IF NOT EXISTS '$user'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL PRIVILEGES ON *.* TO '$user'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '$user'@'localhost';
CREATE DATABASE IF NOT EXISTS $db;
FLUSH PRIVILEGES;
SQL
  echo "export LATTICE_TEST_MYSQL_URL=$url"
}

do_stop() {
  if [ -f "$dir/mysqld.pid" ]; then
    local pid
    pid="$(cat "$dir/mysqld.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      local i
      for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then log "mysqld $pid ignored TERM for 30 s; killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$dir/mysqld.pid"
    log "stopped"
  else
    log "not running"
  fi
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  url) echo "$url" ;;
  status) alive ;;
  destroy) do_stop; rm -rf "$dir" ;;
  *) echo "usage: $0 start|stop|url|status|destroy [INSTANCE]" >&2; exit 2 ;;
esac
