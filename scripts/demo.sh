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

# CRDs, the operator's RBAC and its Deployment (the operator runs as a pod), then the example.
"$kubectl" apply -k deploy/
"$kubectl" wait --for condition=Established --timeout=60s crd --all
"$kubectl" -n pgha-system rollout status deployment/pgha-operator --timeout=120s
"$kubectl" apply -f deploy/examples/minimal.yaml
"$kubectl" wait pgc/orders --for=jsonpath='{.status.phase}'=Healthy --timeout=180s
"$kubectl" get pgc,pgi,pods,svc
cat <<TEXT

pgha demo: a Kubernetes v1.33 control plane and 3 nodes run on loopback; pods are processes.
The operator runs as a pod and made the PgCluster "orders": a primary and two streaming
replicas behind orders-rw / orders-ro. In another shell:

  export KUBECONFIG=$KUBECONFIG
  alias kubectl=$kubectl
  kubectl get nodes -o wide
  kubectl get pgc,pgi                   # the cluster: primary, roles, lag
  kubectl get pods,pvc,svc,secrets
  kubectl get events --sort-by=.lastTimestamp   # the operator's decisions
  target/debug/pgha-e2e --help          # logs, kill/freeze/thaw a pod, stop a node

  # connect through orders-rw with the generated credentials
  secret() { kubectl get secret orders-app -o jsonpath="{.data.\$1}" | base64 -d; }
  psql "host=\$(kubectl get svc orders-rw -o jsonpath='{.spec.clusterIP}') user=\$(secret username) dbname=\$(secret dbname) password=\$(secret password)"

Ctrl-C stops everything.
TEXT
wait "$pid"
