# The two commands a person needs: `make demo` and `make test`.
# `make install` puts pgha and kubectl-pgha (the kubectl plugin) into ~/.cargo/bin, or
# PREFIX/bin with PREFIX=...
.PHONY: install test deps fmt-check clippy unit crds demo bench cluster-up cluster-down deploy

CARGO ?= cargo

test: deps fmt-check clippy unit

PREFIX ?=
install:
	$(CARGO) install --locked --path . $(if $(PREFIX),--root $(PREFIX))

deps:
	@scripts/install-deps.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test binary runs even when one fails; the last lines name what failed.
unit:
	CARGO=$(CARGO) scripts/test.sh

# Benchmarks on real Postgres; they rewrite their section of BENCHMARKS.md.
bench: deps
	@scripts/install-bench-deps.sh
	$(CARGO) bench --bench agent
	$(CARGO) bench --bench archive
	$(CARGO) bench --bench operator
	$(CARGO) bench --bench failover
	$(CARGO) bench --bench restore
	$(CARGO) bench --bench switchover
	$(CARGO) bench --bench metrics
	$(CARGO) bench --bench api_load

# Regenerate crds/ from the Rust types (a test fails when they drift).
crds:
	$(CARGO) run --quiet -- crd --out-dir crds

# A local Kubernetes cluster on loopback (e2e/): control plane + 3 nodes whose pods are
# processes. cluster-up returns once it is up and prints the KUBECONFIG line.
cluster-up: deps
	@scripts/cluster-up.sh

# crds/ and the operator (deploy/) into the cluster that cluster-up started.
deploy:
	@$$(e2e/build-k8s.sh)/kubectl --kubeconfig e2e/.state/kubeconfig apply -k deploy/

cluster-down:
	@if [ -x target/debug/pgha-e2e ]; then target/debug/pgha-e2e --state e2e/.state down; fi

# The cluster, the CRDs and the minimal example, in the foreground; Ctrl-C stops it all.
demo: deps
	@scripts/demo.sh
