#!/usr/bin/env bash
# Installs the peer tools the benchmarks compare against (not needed by make test): for the
# archive benchmark barman-cloud and pgBackRest from Debian, stunnel for pgBackRest's TLS-only
# S3 client, and a venv with python-snappy 0.7.3, with which barman-cloud's --snappy works
# (Debian's python3-snappy breaks it); for the failover benchmark Patroni and etcd.
set -euo pipefail

packages=(barman-cli-cloud pgbackrest stunnel4 python3-venv openssl patroni etcd-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "make bench needs: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Outside /root: Postgres's archive_command runs barman-cloud as the postgres user.
venv=/opt/pgha-bench/barman-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import snappy" 2>/dev/null; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install --quiet python-snappy==0.7.3
fi
