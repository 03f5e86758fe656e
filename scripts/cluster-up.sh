#!/usr/bin/env bash
# make cluster-up: starts the local cluster (control plane + 3 proclet nodes) in the
# background and returns once it is up; `make cluster-down` stops it. Extra arguments go to
# `pgha-e2e up` (e.g. --nodes 5).
set -euo pipefail
cd "$(dirname "$0")/.."

state=e2e/.state
bin="$(e2e/build-k8s.sh)"
cargo build --quiet --workspace
mkdir -p "$state"
if [ -f "$state/up.pid" ] && kill -0 "$(cat "$state/up.pid")" 2>/dev/null; then
  echo "a cluster already runs (PID $(cat "$state/up.pid")); make cluster-down stops it" >&2
  exit 1
fi
rm -f "$state/ready"
# Its own session, so that it outlives this shell and make.
setsid target/debug/pgha-e2e --state "$state" up "$@" >"$state/up.log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 1 900); do
  [ -f "$state/ready" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    cat "$state/up.log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -f "$state/ready" ] || { echo "the cluster did not come up within 90 s; see $state/up.log" >&2; exit 1; }
cat "$state/up.log"
echo "alias kubectl=$bin/kubectl"
echo "logs, faults, Services: target/debug/pgha-e2e --help"
