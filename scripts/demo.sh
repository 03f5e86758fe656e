#!/usr/bin/env bash
# make demo: a local cluster, pgha's CRDs, and the minimal example applied; Ctrl-C tears it
# all down.
set -euo pipefail
cd "$(dirname "$0")/.."

state=e2e/.state
bin="$(e2e/build-k8s.sh)"
cargo build --quiet --workspace
kubectl="$bin/kubectl"
export KUBECONFIG="$PWD/$state/kubeconfig"
mkdir -p "$state"
rm -f "$state/ready"
target/debug/pgha-e2e --state "$state" up &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 900); do
  [ -f "$state/ready" ] && break
  kill -0 "$pid" 2>/dev/null || exit 1
  sleep 0.1
done
[ -f "$state/ready" ] || { echo "the cluster did not come up within 90 s" >&2; exit 1; }

"$kubectl" apply -k crds/
"$kubectl" wait --for condition=Established --timeout=60s crd --all
# The operator (deploy/) lands with the controller issue; until then the cluster holds the
# resource, validated and defaulted by the API server, and nothing acts on it yet.
"$kubectl" apply -f deploy/examples/minimal.yaml
cat <<TEXT

pgha demo: a Kubernetes v1.33 control plane and 3 nodes run on loopback; pods are processes.
In another shell:

  export KUBECONFIG=$KUBECONFIG
  alias kubectl=$kubectl
  kubectl get nodes -o wide
  kubectl get pgc orders -o yaml        # the example, with the API server's defaults
  kubectl get pods,pvc,svc -A
  target/debug/pgha-e2e --help          # logs, kill/freeze/thaw a pod, stop a node

Ctrl-C stops everything.
TEXT
wait "$pid"
