//! Planned switchover (issue "Planned switchover, primary-safe rollouts …"): how long writes
//! stop when a DBA moves the primary, and whether an acknowledged write is lost, for
//! `pgha switchover` and for Patroni 3.0.2's `patronictl switchover` under the same writer
//! (tests/common/writer.rs: one insert every 20 ms, a statement given up after 1 s).
//!
//! - pgha: a 3-instance PgCluster with quorum synchronous replication (`number: 1`) on the
//!   local cluster of e2e/, the operator as a pod; the writer goes through `orders-rw`. Every
//!   other run names the target (`--to`), the others let the operator pick.
//! - Patroni: etcd and 3 members on loopback (support/patroni.rs), tuned and with defaults;
//!   the writer goes to whichever member accepts writes; `--candidate` is always named
//!   (patronictl requires it without a terminal).
//!
//! Run: `make bench` or `cargo bench --bench switchover` as root; `-- patroni` or `-- pgha`
//! runs one side and only prints. `PGHA_BENCH_RUNS` sets the runs per tool (10). Writes the
//! figures into BENCHMARKS.md between the `switchover` markers.

#[allow(dead_code)]
#[path = "../tests/common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "support/ha.rs"]
mod ha;
#[allow(dead_code)]
#[path = "../tests/common/operator.rs"]
mod install;
#[allow(dead_code)]
#[path = "support/patroni.rs"]
mod patroni;
#[allow(dead_code)]
#[path = "support/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../tests/common/writer.rs"]
mod writer;

use std::time::{Duration, Instant, SystemTime};

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

use eventually::eventually as wait_for;
use ha::{Client, EVERY, NS, Pgha, Seen};
use patroni::{Patroni, Settings};
use report::{max, median};

/// Seconds with two decimals: the goal is half a second.
fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The goal for the median write gap.
const GOAL_GAP: Duration = Duration::from_millis(500);

/// One switchover as the client saw it.
struct Run {
    seen: Seen,
    /// Command → the command returned.
    command: Duration,
    /// pgha only: where the time went.
    parts: Option<Parts>,
    /// Whether another instance is primary afterwards.
    moved: bool,
}

impl Run {
    /// Command → the last write before the gap: how long the old primary kept writing.
    fn writes_stop(&self) -> Duration {
        self.seen.first_write.saturating_sub(self.seen.outage)
    }
}

/// The runs of one tool.
struct Series {
    tool: String,
    runs: Vec<Run>,
    /// Runs after which the cluster did not recover: what did not happen.
    failures: Vec<String>,
}

/// Where a pgha switchover's time went, in seconds from the command, from the status's
/// `lastSwitchover` {started, completed}, refined by the SwitchoverStarted /
/// SwitchoverCompleted Events (same machine clock).
#[derive(Clone, Copy)]
struct Parts {
    started: f64,
    completed: f64,
}

fn seconds_since(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------------------------
// Patroni

async fn patroni_side(runs: usize) -> Vec<Series> {
    let mut out = Vec::new();
    for (block, settings) in [(1, Settings::TUNED), (2, Settings::DEFAULT)] {
        let patroni = Patroni::start(settings, block).await;
        let mut client = Client::start(patroni.target()).await;
        let mut series = Series {
            tool: format!(
                "Patroni 3.0.2 `patronictl switchover` ({})",
                settings.label()
            ),
            runs: Vec::new(),
            failures: Vec::new(),
        };
        for _ in 0..runs {
            match patroni_run(&patroni, &mut client).await {
                Ok(run) => series.runs.push(run),
                Err(e) => {
                    println!("Patroni: FAILED: {e}");
                    series.failures.push(e);
                }
            }
        }
        out.push(series);
    }
    out
}

/// Switches over to the next member, waits for writes and for the old leader to stream from
/// the new one.
async fn patroni_run(patroni: &Patroni, client: &mut Client) -> Result<Run, String> {
    let leader = wait_for(Duration::from_secs(180), "Patroni whole", || {
        patroni.healthy_leader()
    })
    .await;
    let candidate = (leader + 1) % 3;
    let at = Instant::now();
    let said = patroni.switchover(leader, candidate).await?;
    let command = at.elapsed();
    client.wait_for_write(at).await?;
    ha::within(
        Duration::from_secs(180),
        "the old leader rejoined",
        || async { (patroni.healthy_leader().await? == candidate).then_some(()) },
    )
    .await?;
    let (host, port) = patroni.postgres(candidate);
    let seen = client.seen(at, (&host, port)).await;
    println!(
        "Patroni: {} → {}, gap {}, command → first write {}, command returned after {}, {} rows lost ({})",
        patroni.name(leader),
        patroni.name(candidate),
        secs(seen.outage),
        secs(seen.first_write),
        secs(command),
        seen.lost,
        said.lines().next().unwrap_or_default()
    );
    Ok(Run {
        seen,
        command,
        parts: None,
        moved: true,
    })
}

// ---------------------------------------------------------------------------------------------
// pgha

/// One switchover (to `to`, or to whom the operator picks), then back to whole.
async fn pgha_run(pgha: &mut Pgha, named: bool) -> Result<Run, String> {
    let old = pgha.settle().await?;
    let to = named.then(|| {
        let ordinal: usize = old.rsplit('-').next().unwrap().parse().unwrap();
        format!("{}-{}", pgha.name, ordinal % 3 + 1)
    });
    let (at, at_wall) = (Instant::now(), SystemTime::now());
    let said = install::pgha_switchover(&pgha.cluster, NS, &pgha.name, to.as_deref()).await?;
    let command = at.elapsed();
    pgha.client.wait_for_write(at).await?;
    let new = pgha.settle().await?;
    if new == old || to.as_ref().is_some_and(|to| *to != new) {
        return Err(format!("{old} still primary, or not {to:?}: {said}"));
    }
    let endpoint = pgha.instances.get(&new).await.unwrap().status.unwrap();
    let endpoint = endpoint.endpoint.unwrap();
    let seen = pgha.client.seen(at, (&endpoint.host, endpoint.port)).await;
    let record = pgha.status().await.unwrap().last_switchover.unwrap();
    let started = pgha.precise(&record.started, "SwitchoverStarted").await;
    let completed = record.completed.as_ref().expect("a completed switchover");
    let completed = pgha.precise(completed, "SwitchoverCompleted").await;
    let parts = Parts {
        started: seconds_since(at_wall, started),
        completed: seconds_since(at_wall, completed),
    };
    let run = Run {
        seen,
        command,
        parts: Some(parts),
        moved: true,
    };
    println!(
        "pgha: {old} → {new}{}, gap {}, command → first write {} (writes stop {}, started {:.2} s, completed {:.2} s), command returned after {}, {} rows lost",
        if named { " (--to)" } else { "" },
        secs(run.seen.outage),
        secs(run.seen.first_write),
        secs(run.writes_stop()),
        parts.started,
        parts.completed,
        secs(command),
        run.seen.lost,
    );
    Ok(run)
}

/// An image rollout with `primaryUpdateMethod: method`, `runs` times, each to a new tag: the
/// replicas are re-created first, then the primary moves by switchover or restarts in place.
async fn rollouts(pgha: &mut Pgha, method: &str, runs: usize) -> Series {
    let mut series = Series {
        tool: format!("pgha image rollout, `primaryUpdateMethod: {method}`"),
        runs: Vec::new(),
        failures: Vec::new(),
    };
    for round in 1..=runs {
        match rollout(pgha, method, round).await {
            Ok(run) => series.runs.push(run),
            Err(symptom) => {
                let what = format!("rollout-{method}-{round}");
                series.failures.push(pgha.give_up(&what, &symptom).await);
            }
        }
    }
    series
}

/// One image rollout to a tag of its own, until every instance runs it and the cluster is
/// whole; `command` is how long that took.
async fn rollout(pgha: &mut Pgha, method: &str, round: usize) -> Result<Run, String> {
    let old = pgha.settle().await?;
    let tag = if method == "restart" { 80 } else { 90 } + round;
    let image = format!("pgha/postgres:15.{tag}");
    let patch = serde_json::json!({"spec": {"image": image, "primaryUpdateMethod": method}});
    let at = Instant::now();
    pgha.clusters
        .patch(&pgha.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| e.to_string())?;
    let prefix = format!("{}-", pgha.name);
    ha::within(
        Duration::from_secs(300),
        "the new image everywhere",
        || async {
            let list = pgha.instances.list(&Default::default()).await.ok()?;
            let ours = list
                .items
                .iter()
                .filter(|i| i.name_any().starts_with(&prefix));
            let statuses: Vec<_> = ours.map(|i| i.status.clone()).collect::<Option<_>>()?;
            let done = statuses.len() == 3
                && statuses
                    .iter()
                    .all(|s| s.ready && s.image.as_deref() == Some(image.as_str()));
            done.then_some(())
        },
    )
    .await?;
    let new = pgha.settle().await?;
    let command = at.elapsed();
    let endpoint = pgha.instances.get(&new).await.unwrap().status.unwrap();
    let endpoint = endpoint.endpoint.unwrap();
    let seen = pgha.client.seen(at, (&endpoint.host, endpoint.port)).await;
    println!(
        "pgha rollout ({method}) to {image}: {old} → {new}, longest write gap {}, took {}, {} rows lost",
        secs(seen.outage),
        secs(command),
        seen.lost
    );
    Ok(Run {
        seen,
        command,
        parts: None,
        moved: new != old,
    })
}

async fn pgha_side(runs: usize, rollout_runs: usize) -> Vec<Series> {
    let mut pgha = Pgha::start(11).await;
    let mut series = Series {
        tool: "pgha `pgha switchover`".into(),
        runs: Vec::new(),
        failures: Vec::new(),
    };
    for round in 1..=runs {
        match pgha_run(&mut pgha, round % 2 == 0).await {
            Ok(run) => series.runs.push(run),
            Err(symptom) => {
                let what = format!("switchover-{round}");
                series.failures.push(pgha.give_up(&what, &symptom).await);
            }
        }
    }
    let mut all = vec![series];
    for method in ["switchover", "restart"] {
        all.push(rollouts(&mut pgha, method, rollout_runs).await);
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Report

fn of(series: &Series, f: impl Fn(&Run) -> Duration) -> Vec<Duration> {
    series.runs.iter().map(f).collect()
}

fn shown(values: &[Duration], statistic: fn(&[Duration]) -> Duration) -> String {
    match values {
        [] => "—".into(),
        _ => secs(statistic(values)),
    }
}

fn lost(series: &Series) -> usize {
    series.runs.iter().map(|r| r.seen.lost).sum()
}

fn results_table(all: &[&Series]) -> String {
    let mut table = String::from(
        "| tool | runs | failed | write gap, median | max | command → first write, median | max | command returned, median | acknowledged rows lost |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for s in all {
        let gaps = of(s, |r| r.seen.outage);
        let firsts = of(s, |r| r.seen.first_write);
        table += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.tool,
            s.runs.len(),
            s.failures.len(),
            shown(&gaps, median),
            shown(&gaps, max),
            shown(&firsts, median),
            shown(&firsts, max),
            shown(&of(s, |r| r.command), median),
            lost(s)
        );
    }
    table
}

/// pgha's medians from the command: the operator takes the request, the old primary stops
/// writing, the new one serves, the first write goes through `-rw`.
fn parts_line(pgha: &Series) -> String {
    let parts: Vec<Parts> = pgha.runs.iter().filter_map(|r| r.parts).collect();
    if parts.is_empty() {
        return String::new();
    }
    let median_of = |f: fn(&Parts) -> f64| {
        let d: Vec<Duration> = parts
            .iter()
            .map(|p| Duration::from_secs_f64(f(p).max(0.0)))
            .collect();
        secs(median(&d))
    };
    let gaps = of(pgha, |r| r.seen.outage);
    let met = !gaps.is_empty() && median(&gaps) <= GOAL_GAP && lost(pgha) == 0;
    format!(
        "Where pgha's time goes (medians from the command): the operator records the switchover \
         (`lastSwitchover.started`, Event SwitchoverStarted) at {}; the old primary's last \
         acknowledged write at {}; the new primary serves and the operator records it \
         (`completed`) at {}; the first write through `orders-rw` at {}. \
         Goal (≤ {} s median write gap, 0 acknowledged commits lost): **{}**.\n\n",
        median_of(|p| p.started),
        shown(&of(pgha, Run::writes_stop), median),
        median_of(|p| p.completed),
        shown(&of(pgha, |r| r.seen.first_write), median),
        GOAL_GAP.as_secs_f64(),
        if met { "met" } else { "not met" },
    )
}

fn ratio(pgha: Option<&Series>, patroni: &[&Series]) -> String {
    let Some(pgha) = pgha.filter(|s| !s.runs.is_empty()) else {
        return String::new();
    };
    let ours = median(&of(pgha, |r| r.seen.outage));
    let each: Vec<String> = patroni
        .iter()
        .filter(|p| !p.runs.is_empty())
        .map(|p| {
            let theirs = median(&of(p, |r| r.seen.outage));
            format!(
                "{} / {} = {:.2} against {}",
                secs(ours),
                secs(theirs),
                ours.as_secs_f64() / theirs.as_secs_f64(),
                p.tool
            )
        })
        .collect();
    if each.is_empty() {
        return String::new();
    }
    format!("Median write gap, pgha / Patroni: {}.\n\n", each.join("; "))
}

fn failures(all: &[&Series]) -> String {
    let lines: Vec<String> = all
        .iter()
        .flat_map(|s| {
            s.failures
                .iter()
                .map(move |f| format!("- {}: {f}\n", s.tool))
        })
        .collect();
    match lines.len() {
        0 => String::new(),
        _ => format!("Runs that failed:\n\n{}\n", lines.concat()),
    }
}

fn is_rollout(series: &&Series) -> bool {
    series.tool.starts_with("pgha image rollout")
}

/// Image rollouts: the longest write gap of the whole rollout.
fn rollouts_table(all: &[&Series]) -> String {
    let rollouts: Vec<&&Series> = all.iter().filter(|s| is_rollout(s)).collect();
    if rollouts.is_empty() {
        return String::new();
    }
    let mut table = String::from(
        "| rollout | runs | failed | primary moved | longest write gap, median | max | apply → every instance updated, median | acknowledged rows lost |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for s in rollouts {
        let gaps = of(s, |r| r.seen.outage);
        table += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.tool,
            s.runs.len(),
            s.failures.len(),
            s.runs.iter().filter(|r| r.moved).count(),
            shown(&gaps, median),
            shown(&gaps, max),
            shown(&of(s, |r| r.command), median),
            lost(s)
        );
    }
    format!(
        "Image rollouts on the same PgCluster under the same writer, a new `spec.image` tag each \
         run: every pod is re-created on its volume, the replicas first; the longest write gap \
         of a rollout is the primary's turn. With `switchover` the primary moves to an updated \
         replica first; with `restart` its pod is re-created in place, and when its Lease \
         (3 s) runs out before the new pod serves, a replica takes over as in a failover \
         (\"primary moved\").\n\n{table}\n"
    )
}

fn report(everything: &[&Series], took: Duration) -> String {
    let switchovers: Vec<&Series> = everything
        .iter()
        .copied()
        .filter(|s| !is_rollout(s))
        .collect();
    let all = &switchovers[..];
    let pgha = all.iter().copied().find(|s| s.tool.starts_with("pgha"));
    let patroni: Vec<&Series> = all
        .iter()
        .copied()
        .filter(|s| s.tool.starts_with("Patroni"))
        .collect();
    format!(
        "{header}\
         One writer for both (tests/common/writer.rs): an insert every {every} ms, a statement \
         given up after 1 s, a row counted once its commit returned. The write gap is the \
         longest time between two acknowledged writes after the command (the last on the old \
         primary, the first on the new one); command → first write includes the command's own \
         start. pgha: the local cluster of e2e/, the operator from deploy/, a 3-instance \
         PgCluster with `replication: {{synchronous: {{mode: quorum, number: 1}}}}`, written \
         through `orders-rw`; every other run names the target with `--to`. Patroni 3.0.2 \
         (Debian): one etcd 3.4.23 and 3 members on loopback, Postgres 15, asynchronous \
         replication (its default), written through the member that accepts writes (libpq \
         multi-host, `target_session_attrs=read-write`), `patronictl switchover --leader … \
         --candidate … --force`. Before each run the cluster is whole: every replica streams \
         from the primary on its timeline.\n\n\
         {results}\n{failures}{ratio}{parts}{rollouts}\
         The whole benchmark took {minutes:.0} minutes.\n",
        header = report::header("cargo bench --bench switchover"),
        every = EVERY.as_millis(),
        results = results_table(all),
        failures = failures(all),
        ratio = ratio(pgha, &patroni),
        parts = pgha.map(parts_line).unwrap_or_default(),
        rollouts = rollouts_table(everything),
        minutes = took.as_secs_f64() / 60.0,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Cargo passes `--bench`; a bare word picks one side.
    let side = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runs = report::knob("PGHA_BENCH_RUNS", 10) as usize;
    let rollout_runs = report::knob("PGHA_BENCH_ROLLOUTS", 3) as usize;
    let started = Instant::now();
    let mut all = Vec::new();
    if side.as_deref() != Some("pgha") {
        all.extend(patroni_side(runs).await);
        println!("{}", results_table(&all.iter().collect::<Vec<_>>()));
    }
    if side.as_deref() != Some("patroni") {
        all.extend(pgha_side(runs, rollout_runs).await);
    }
    let report = report(&all.iter().collect::<Vec<_>>(), started.elapsed());
    println!("{report}");
    if side.is_none() {
        report::write_section("switchover", "Switchover", &report);
    }
}
