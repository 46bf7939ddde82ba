#!/usr/bin/env bash
# What the TLS tests need: OpenSSL's command-line client (`openssl s_client`, with -msg and the
# k/K key-update commands of OpenSSL 1.1.1 and later), used by shards/tests/tls_openssl.rs.
#
# Idempotent; installs Debian's `openssl` package when the command is missing (root + apt), else
# fails saying what to install. Prints the version found.
set -euo pipefail

if ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tls.sh: installing openssl with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssl
  else
    echo "tls.sh: the openssl command is required (Debian: apt-get install openssl; OpenSSL >= 1.1.1)" >&2
    exit 1
  fi
fi
version="$(openssl version)"
case "$version" in
  "OpenSSL 1.1.1"* | "OpenSSL 3."*) echo "tls.sh: $version" ;;
  *) echo "tls.sh: OpenSSL >= 1.1.1 is required for TLS 1.3 key updates, found: $version" >&2; exit 1 ;;
esac
