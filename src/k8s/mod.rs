//! Kubernetes calls that both the operator (`controller`) and the agent make: server-side
//! apply of a status, the primary Lease, and how watches retry.

pub mod lease;
pub mod status;
pub mod watch;

pub use status::apply_status;
