#!/usr/bin/env bash
# Prints the parameters a Postgres major lets postgresql.conf set (pg_settings without the
# internal ones, lowercased), for src/api/parameters/MAJOR.txt: scripts/pg-parameters.sh 15
set -euo pipefail
major=${1:?usage: scripts/pg-parameters.sh MAJOR}
bin=/usr/lib/postgresql/$major/bin
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
as=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; as=(runuser -u postgres --); fi
"${as[@]}" "$bin/initdb" -D "$dir/data" >/dev/null
echo "# The parameters PostgreSQL $major lets postgresql.conf set: pg_settings without the internal ones,"
echo "# lowercased. Checked against the installed server by tests/agent/config.rs; regenerate with"
echo "# scripts/pg-parameters.sh $major."
echo "SELECT name FROM pg_settings WHERE context <> 'internal';" |
  "${as[@]}" "$bin/postgres" --single -D "$dir/data" postgres |
  sed -n 's/.*name = "\(.*\)".*/\1/p' | tr 'A-Z' 'a-z' | sort -u
