#!/usr/bin/env bash
# Operations checks that are not cargo tests: the Jenkinsfile passes npm-groovy-lint (and a broken
# copy does not, so the lint is known to bite), and the deploy scripts pass `bash -n`. Also installs
# what the operations tests need (python3 for the webhook stub, systemd-analyze), npm-groovy-lint
# into a cache dir, and Java for it (Debian's default-jre-headless). Idempotent; fails loudly.
#
#   deploy/ci/ops.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${LATTICE_CI_CACHE:-/tmp/lattice-ci-cache}/npm-groovy-lint"

apt_install() {
  echo "ops.sh: installing $* from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@"
}
command -v java >/dev/null || apt_install default-jre-headless
command -v python3 >/dev/null || apt_install python3
# The HTTPS alert test makes its certificate with the openssl CLI.
command -v openssl >/dev/null || apt_install openssl
command -v npm >/dev/null || { echo "ops.sh: npm missing: apt-get install nodejs npm" >&2; exit 1; }
if [ ! -x "$cache/node_modules/.bin/npm-groovy-lint" ]; then
  echo "ops.sh: installing npm-groovy-lint into $cache"
  mkdir -p "$cache"
  (cd "$cache" && npm install --no-audit --no-fund --silent npm-groovy-lint@16.2.0)
fi
lint="$cache/node_modules/.bin/npm-groovy-lint"

echo "ops.sh: npm-groovy-lint Jenkinsfile"
"$lint" --failon warning --output txt Jenkinsfile

# The lint must reject a Jenkinsfile with a syntax error.
bad="$(mktemp -d)"
trap 'rm -rf "$bad"' EXIT
sed 's/stages {/stages {{/' Jenkinsfile > "$bad/Jenkinsfile"
if "$lint" --failon warning --output txt "$bad/Jenkinsfile" >/dev/null 2>&1; then
  echo "ops.sh: npm-groovy-lint accepted a broken Jenkinsfile: the lint is not working" >&2
  exit 1
fi

echo "ops.sh: bash -n on the deploy scripts"
for s in deploy/install.sh deploy/init-env.sh deploy/schema/*.sh; do bash -n "$s"; done
# systemd-analyze checks deploy/lattice.service (shards/tests/deploy.rs).
command -v systemd-analyze >/dev/null || apt_install systemd
echo "ops.sh: ok"
