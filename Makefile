# The two commands a person needs: `make demo` and `make test`.
.PHONY: test deps fmt-check clippy unit crds demo bench

CARGO ?= cargo

test: deps fmt-check clippy unit

deps:
	@scripts/install-deps.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

# Benchmarks on real Postgres; they rewrite their section of BENCHMARKS.md.
bench: deps
	@scripts/install-bench-deps.sh
	$(CARGO) bench --bench agent
	$(CARGO) bench --bench archive

# Regenerate crds/ from the Rust types (a test fails when they drift).
crds:
	$(CARGO) run --quiet -- crd --out-dir crds

# The local control plane has an API server but no nodes yet (issue "Local Kubernetes control
# plane"). Until it has, the demo builds the operator, validates the examples and prints the CRDs.
demo:
	$(CARGO) build --quiet
	@target/debug/pgha crd
	@for f in deploy/examples/*.yaml; do target/debug/pgha validate -f $$f; done
	@echo
	@echo "pgha demo: the CRDs above install with 'kubectl apply -k crds/' on any Kubernetes 1.33+ cluster."
	@echo "Missing for the full demo: nodes on the local control plane under e2e/ and the operator controllers."
