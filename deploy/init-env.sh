#!/usr/bin/env bash
# One-command environment set-up for Lattice on Debian (run as root):
#   - packages: ca-certificates, procps, curl (health checks), mariadb-client (schema scripts);
#   - a `lattice` system user and group (no login, home /var/lib/lattice);
#   - kernel settings for 100 k connections in /etc/sysctl.d/60-lattice.conf, applied now;
#   - descriptor limits in /etc/security/limits.d/60-lattice.conf (the unit sets LimitNOFILE itself).
#
#   deploy/init-env.sh [--root DIR]
#
# With --root DIR the files are written under DIR and nothing is installed, created or applied
# on this machine (used by tests). Idempotent: running it again changes nothing.
set -euo pipefail
root=/
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "init-env.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
root="${root%/}"
real=0; [ -z "$root" ] && real=1
[ "$real" = 0 ] || [ "$(id -u)" = 0 ] || { echo "init-env.sh: run as root" >&2; exit 1; }

if [ "$real" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends ca-certificates procps curl mariadb-client
  if ! getent group lattice >/dev/null; then groupadd --system lattice; fi
  if ! getent passwd lattice >/dev/null; then
    useradd --system --gid lattice --home-dir /var/lib/lattice --no-create-home \
      --shell /usr/sbin/nologin --comment "Lattice game server" lattice
  fi
fi

install -d -m 0755 "$root/etc/sysctl.d" "$root/etc/security/limits.d"
cat > "$root/etc/sysctl.d/60-lattice.conf" <<'CONF'
# Lattice: 100 k concurrent connections per machine (deploy/init-env.sh).
# System-wide open files, and the most one process may raise its limit to.
fs.file-max = 2097152
fs.nr_open = 2097152
# Accept queue and SYN backlog for connection bursts (reconnect storms after a restart).
net.core.somaxconn = 65535
net.ipv4.tcp_max_syn_backlog = 65535
net.core.netdev_max_backlog = 65535
# Local ports for outgoing connections (database, node links, load tests).
net.ipv4.ip_local_port_range = 1024 65535
# Reuse TIME_WAIT sockets for outgoing connections.
net.ipv4.tcp_tw_reuse = 1
CONF
cat > "$root/etc/security/limits.d/60-lattice.conf" <<'CONF'
# Lattice: descriptors for 100 k connections (the systemd unit sets LimitNOFILE=1048576 itself).
lattice soft nofile 1048576
lattice hard nofile 1048576
lattice soft core unlimited
lattice hard core unlimited
CONF
if [ "$real" = 1 ]; then
  sysctl -q -p "$root/etc/sysctl.d/60-lattice.conf"
  echo "init-env.sh: packages, user lattice, sysctl and limits in place"
else
  echo "init-env.sh: files written under $root (nothing applied)"
fi
