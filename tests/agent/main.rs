//! The instance agent against real Postgres processes on loopback (issue 4).

mod binary;
// Shared with tests/archive and benches/, which use helpers these tests do not.
#[allow(dead_code)]
mod cluster;
mod config;
#[path = "../common/eventually.rs"]
mod eventually;
mod fencing;
mod metrics;
mod replication;
mod supervision;
