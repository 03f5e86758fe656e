//! Pure decisions: functions of the spec and of observations, with time as a parameter.
//! Nothing here reads the network, the disk, the environment or the clock.

pub mod agent;
pub mod backups;
pub mod children;
pub mod claims;
pub mod config;
pub mod drills;
pub mod failover;
pub mod instance;
pub mod lease;
pub mod managed;
pub mod names;
pub mod ownership;
pub mod prefetch;
pub mod quote;
pub mod recovery;
pub mod restart;
pub mod retention;
pub mod rollout;
pub mod status;
pub mod tls;
pub mod validation;
pub mod vouch;
pub mod wal;
