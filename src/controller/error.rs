//! Why a reconcile failed; the error policy backs off per object and counts it.

use crate::plan::children::PlanError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{kind} {name} has no namespace")]
    NoNamespace { kind: &'static str, name: String },
    #[error("reading random bytes for passwords: {0}")]
    Random(std::io::Error),
    #[error("making the cluster's TLS certificates: {0}")]
    Certificate(#[from] rcgen::Error),
}
