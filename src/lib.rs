//! pgha: a PostgreSQL high-availability operator for Kubernetes.
//!
//! `api` holds the resources, `plan` the pure decisions, and `controller`, `agent` and
//! `archive` the side effects (Kubernetes, Postgres, object store), with `k8s`, `pg` and
//! `pod_http` below them for what they share. `cli` wires them into the `pgha` binary.

pub mod agent;
pub mod api;
pub mod archive;
pub mod cli;
pub mod controller;
pub mod k8s;
pub mod pg;
pub mod plan;
pub mod pod_http;
