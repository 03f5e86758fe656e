//! The instance agent: runs as PID 1 beside Postgres (issue "instance agent").
