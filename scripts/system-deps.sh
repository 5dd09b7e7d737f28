#!/usr/bin/env bash
# Install the Debian packages the stack and its tests need (Redis, PostgreSQL, promtool...).
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
command -v pgbench >/dev/null 2>&1 || missing+=(postgresql-contrib)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the live page's browser test
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)  # the chart's alert rules
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)  # the PostgreSQL start script
command -v pgbackrest >/dev/null 2>&1 || missing+=(pgbackrest)  # WAL archiving and backups
# The image and the chart's pods as containers (make image, make chart-up): podman with
# netavark (container names resolve), iptables for its bridge, debootstrap for stand-in bases.
command -v podman >/dev/null 2>&1 || missing+=(podman runc netavark aardvark-dns)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# Network namespaces and their faults (leaderboard_tools/chaos/network.py): ip and tc.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
for extra in "$@"; do
    dpkg -s "$extra" >/dev/null 2>&1 || missing+=("$extra")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]}" >&2
    echo "run as root: $cmd" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts services on install where it can; the stack runs its own on its own ports.
for svc in redis-server postgresql prometheus prometheus-node-exporter; do
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" 2>/dev/null || true; fi
done
