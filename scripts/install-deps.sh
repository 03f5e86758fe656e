#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine. As root it installs; otherwise it
# lists what is missing and stops.
set -euo pipefail

# Debian packages: the C toolchain for crates with native code, PostgreSQL 15 (initdb,
# postgres, pg_basebackup, pg_rewind, pgbench) for the agent tests, which run real servers,
# openssl and curl for the local control plane (keys, readiness), iptables for its pod
# network partitions, and prometheus for promtool, which checks and unit-tests the alert rules.
packages=(build-essential pkg-config postgresql-15 openssl curl iptables prometheus)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "make test needs these Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "make test needs a Rust toolchain (rustup, https://rustup.rs); cargo is not on PATH" >&2
  exit 1
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# The archive tests run a real S3-compatible server on loopback: s3s-fs, built once into a
# cache outside the clone (0.14.1: newer releases need a newer rustc than ours).
s3s_root="${HOME:-/root}/.cache/pgha-tools/s3s-fs"
if [ ! -x "$s3s_root/bin/s3s-fs" ]; then
  echo "installing s3s-fs 0.14.1 into $s3s_root (one time, about 2 minutes)" >&2
  cargo install --quiet s3s-fs --version 0.14.1 --features binary --root "$s3s_root"
fi

# The tests against a real API server run the pinned upstream etcd and kube-apiserver, built
# once from the Go module proxy into ~/.cache/pgha-e2e (about 5 minutes the first time).
if ! command -v go >/dev/null; then
  echo "make test needs Go to build the pinned Kubernetes binaries (e2e/build-k8s.sh)" >&2
  exit 1
fi
"$(dirname "$0")/../e2e/build-k8s.sh" >/dev/null

# Postgres refuses to run as root: when the tests run as root, the agent runs it as 'postgres',
# which the Debian package creates.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "the agent tests run as root and need a 'postgres' user; install postgresql-15" >&2
  exit 1
fi
