#!/usr/bin/env bash
# The test command (README): installs what the tests need, starts a throwaway MariaDB, runs every test
# (the integration tests under both I/O drivers), the TypeScript client tests, then stops MariaDB.
# Works on a fresh Debian 12 machine as root with network to the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v ip >/dev/null || need_apt+=(iproute2) # the cluster's network-namespace test (as root)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest"
  cargo install cargo-nextest --locked -q
fi

# Operations: Jenkinsfile lint, deploy script syntax, systemd-analyze for the unit test.
deploy/ci/ops.sh

# OpenSSL's s_client for the TLS tests (installed from Debian's packages if missing).
deploy/ci/tls.sh

# etcd 3.4 for the cluster membership and machine-id lease tests (Debian etcd-server if missing).
deploy/ci/etcd.sh

# MariaDB for the storage tests (installed from Debian's packages if missing).
eval "$(deploy/ci/mariadb.sh start)"
trap 'deploy/ci/mariadb.sh stop >/dev/null 2>&1 || true; deploy/ci/mariadb.sh stop fault >/dev/null 2>&1 || true; deploy/ci/mariadb.sh stop alerts >/dev/null 2>&1 || true; deploy/ci/mariadb.sh stop acctfault >/dev/null 2>&1 || true' EXIT

# Everything, with io_uring forced (fails loudly if the kernel refuses it)...
LATTICE_RUNTIME__DRIVER=uring cargo nextest run --workspace --no-fail-fast
# ...and the whole-process tests again on epoll, and with glibc's malloc as the global allocator
# (the default is lattice-alloc).
LATTICE_RUNTIME__DRIVER=epoll cargo nextest run -p lattice-runtime -p lattice-server --no-fail-fast
cargo nextest run -p lattice-server --no-default-features --features alloc-system --no-fail-fast

# lattice-alloc: 10 M-operation release stress test and the loom model of the remote-free lanes.
deploy/ci/alloc.sh
deploy/ci/mesh.sh

# TypeScript client: golden vectors, scripted transport, tsc --noEmit, the embedded demo bundle.
deploy/ci/ts.sh
# Real clients over WebSocket (Chromium + Python websockets, Node mini-game adapter) and the
# Autobahn conformance suite (sections 1-7, 10, 12-13).
tests/clients.sh
tests/autobahn.sh check
echo "test.sh: all tests passed"
