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

# An S3-compatible server on loopback, run the way a user runs MinIO: pods reach it at an
# address and port given in spec.backup.s3.endpoint.
s3_port=19000
# The cluster is new on every run, so is its object store: an archive an earlier run's
# cluster left behind belongs to that cluster (owner.json), and the new one would be refused.
rm -rf "$state/s3"
mkdir -p "$state/s3/pg-backups"
"${HOME:-/root}/.cache/pgha-tools/s3s-fs/bin/s3s-fs" --host 127.0.0.1 --port "$s3_port" \
  --access-key demo-access --secret-key demo-secret "$state/s3" 2>"$state/s3s-fs.log" &
s3_pid=$!
trap 'kill -TERM $pid $s3_pid 2>/dev/null; wait $pid' EXIT

# CRDs, the operator's RBAC and its Deployment (the operator runs as a pod), then the example.
"$kubectl" apply -k deploy/
"$kubectl" wait --for condition=Established --timeout=60s crd --all
"$kubectl" -n pgha-system rollout status deployment/pgha-operator --timeout=120s
"$kubectl" create secret generic pg-backup-credentials \
  --from-literal=ACCESS_KEY_ID=demo-access --from-literal=SECRET_ACCESS_KEY=demo-secret
"$kubectl" apply -f deploy/examples/minimal.yaml
# Backups to the local S3: WAL archiving, a base backup every night, the first one at once.
"$kubectl" patch pgc/orders --type merge -p "{\"spec\": {\"backup\": {\"s3\": {
  \"bucket\": \"pg-backups\", \"endpoint\": \"http://127.0.0.1:$s3_port\",
  \"credentialsSecret\": \"pg-backup-credentials\"}, \"schedule\": \"0 2 * * *\"}}}"
"$kubectl" wait pgc/orders --for=jsonpath='{.status.phase}'=Healthy --timeout=180s
"$kubectl" wait pgc/orders --for=jsonpath='{.status.lastBackup}' --timeout=180s 2>/dev/null ||
  "$kubectl" get pgb
"$kubectl" get pgc,pgi,pgb,pods,svc
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

Backups: WAL and a first base backup are in the local S3 (s3s-fs, data in $state/s3).
  kubectl get pgb                       # PgBackups: phase, size
  kubectl get pgc orders -o jsonpath='{.status.conditions}'   # ContinuousArchiving
  kubectl apply -f - <<EOF              # an on-demand backup
  {apiVersion: pgha.dev/v1, kind: PgBackup, metadata: {name: before-migration},
   spec: {cluster: orders}}
  EOF
  # restore into a new cluster: to the end of the archive, or to a time with
  # target: {time: 2026-11-30T10:00:00Z} (kubectl get pgc orders shows the window start)
  kubectl apply -f - <<EOF
  {apiVersion: pgha.dev/v1, kind: PgCluster, metadata: {name: orders-copy}, spec: {
   instances: 1, storage: {size: 10Gi}, bootstrap: {recovery: {
    source: {s3: {bucket: pg-backups, path: default/orders, endpoint: 'http://127.0.0.1:$s3_port',
                  credentialsSecret: pg-backup-credentials}}}}}}
  EOF

Ctrl-C stops everything.
TEXT
wait "$pid"
