#!/usr/bin/env bash
# Builds the pinned control-plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl v1.33.13 and etcd v3.5.21) from the Go module proxy into
# ~/.cache/pgha-e2e/<version>/, once: a binary that is already there is not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/k8s"

version=v1.33.13
out="${PGHA_E2E_CACHE:-${HOME:-/root}/.cache/pgha-e2e}/$version"
mkdir -p "$out"

declare -A packages=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [etcd]=./etcd
)
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd; do
  if [ ! -x "$out/$name" ]; then
    echo "building $name into $out" >&2
    # -trimpath and no debug info: smaller binaries; CGO off: static, like upstream's.
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out/$name.tmp" "${packages[$name]}"
    mv "$out/$name.tmp" "$out/$name"
  fi
done
echo "$out"
