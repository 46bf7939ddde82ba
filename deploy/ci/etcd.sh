#!/usr/bin/env bash
# What the cluster membership tests need: etcd 3.4 (Debian `etcd-server`), which the tests start
# themselves on free ports with a temporary data directory (shards/tests/etcd*.rs).
#
# Idempotent; installs Debian's `etcd-server` package when the `etcd` command is missing (root +
# apt), else fails saying what to install. Prints the version found. Debian's package starts a
# system etcd on 2379 through its service unit; the tests never use it (they pick free ports).
set -euo pipefail

if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "etcd.sh: installing etcd-server with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends etcd-server
  else
    echo "etcd.sh: the etcd command is required (Debian: apt-get install etcd-server; etcd 3.4)" >&2
    exit 1
  fi
fi
# The first line of `etcd --version`, without a pipe into `head` (under pipefail, head closing
# the pipe early kills etcd with SIGPIPE and fails this script: exit 141, seen once in CI).
all="$(etcd --version 2>/dev/null)" || all=""
version="${all%%$'\n'*}"
case "$version" in
  "etcd Version: 3.4"* | "etcd Version: 3.5"*) echo "etcd.sh: $version" ;;
  *) echo "etcd.sh: etcd 3.4 or 3.5 is required (JSON gateway at /v3/), found: $version" >&2; exit 1 ;;
esac
