//! A process's CPU and memory from /proc, for benches that watch the operator.

use std::path::Path;

/// Clock ticks of CPU (user + system) a process has used.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (USER_HZ on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The PID of the operator pod `pod` of the local cluster whose state is in `state`.
pub fn operator_pid(state: &Path, pod: &str) -> u32 {
    let pid_file = state
        .join("pods/pgha-system")
        .join(pod)
        .join("operator.pid");
    std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
