#!/usr/bin/env bash
# Applies the Lattice storage schema to a clustered (MySQL/MariaDB) database by hand.
#
#   apply.sh --config /etc/lattice/lattice.toml [--print]
#
# In single-node mode `lattice run` creates its tables itself; in a cluster the operator applies
# migrations once, before the nodes start: this script prints the SQL with
# `lattice tool migrate --print` (the statements are idempotent: CREATE TABLE IF NOT EXISTS and
# recorded versions) and, without --print, runs it with the `mariadb`/`mysql` client against
# storage.url from the config. Fails loudly: bad config (exit 2), no client, or an SQL error.
set -euo pipefail
lattice="${LATTICE_BIN:-lattice}"
config=""
print=0
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="${2:?--config needs a file}"; shift 2 ;;
    --print) print=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "apply.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$config" ] || { echo "apply.sh: --config FILE is required" >&2; exit 2; }
sql="$("$lattice" tool migrate --print --config "$config")"
if [ "$print" = 1 ]; then printf '%s\n' "$sql"; exit 0; fi
url="$("$lattice" config --config "$config" | sed -n '/^\[storage\]/,/^\[/{s/^url = "\(.*\)"$/\1/p}')"
case "$url" in
  mysql://*) ;;
  *) echo "apply.sh: storage.url is not a mysql:// URL (single-node SQLite creates its own tables)" >&2; exit 2 ;;
esac
rest="${url#mysql://}"; cred="${rest%%@*}"; hostport="${rest#*@}"; hostport="${hostport%%/*}"
user="${cred%%:*}"; pass="${cred#*:}"; host="${hostport%%:*}"; port="${hostport##*:}"
[ "$port" != "$hostport" ] || port=3306
client="$(command -v mariadb || command -v mysql || true)"
[ -n "$client" ] || { echo "apply.sh: no mariadb/mysql client (apt-get install mariadb-client)" >&2; exit 1; }
printf '%s\n' "$sql" | MYSQL_PWD="$pass" "$client" --protocol=TCP -h "$host" -P "$port" -u "$user"
echo "apply.sh: schema applied to $host:$port"
