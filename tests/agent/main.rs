//! The instance agent against real Postgres processes on loopback (issue 4).

mod binary;
mod cluster;
mod config;
mod fencing;
mod replication;
mod supervision;
