//! Kubernetes calls that both the operator (`controller`) and the agent make: server-side
//! apply of a status, and the primary Lease.

pub mod lease;
pub mod status;

pub use status::apply_status;
