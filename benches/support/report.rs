//! What every benchmark needs to report: medians, units, the Postgres version, and its own
//! section of BENCHMARKS.md.

use std::time::Duration;

/// A size knob from the environment (for a quick try), else `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn pg_version() -> String {
    let bin = pgha::agent::pgbin::find_bin_dir().unwrap();
    let out = std::process::Command::new(bin.join("postgres"))
        .arg("--version")
        .output()
        .unwrap();
    // "postgres (PostgreSQL) 15.18 (Debian ...)"
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap_or("?")
        .to_string()
}

/// "Command: `…` (date, cores, PostgreSQL version)." — the first line of every section.
pub fn header(command: &str) -> String {
    format!(
        "Command: `{command}` ({date}, {cpus} cores, PostgreSQL {pg}).\n\n",
        date = chrono::Utc::now().format("%Y-%m-%d"),
        cpus = std::thread::available_parallelism().map_or(0, |n| n.get()),
        pg = pg_version(),
    )
}

/// The middle value; for an even count, the mean of the two middle ones.
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let n = sorted.len();
    if n.is_multiple_of(2) {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    } else {
        sorted[n / 2]
    }
}

pub fn max(values: &[Duration]) -> Duration {
    values.iter().copied().max().unwrap_or_default()
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// Replaces the text between `<!-- name:start -->` and `<!-- name:end -->` in BENCHMARKS.md,
/// or appends the section under `heading`.
pub fn write_section(name: &str, heading: &str, report: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{start}\n{report}{end}");
    let updated = match (text.find(&start), text.find(&end)) {
        (Some(s), Some(e)) => format!("{}{section}{}", &text[..s], &text[e + end.len()..]),
        _ => format!("{text}\n## {heading}\n\n{section}\n"),
    };
    std::fs::write(path, updated).unwrap();
}
