//! Unplanned failover (issue "Unplanned failover with fencing"): how long writes stop when the
//! primary fails, and whether an acknowledged write is lost, for pgha and for Patroni 3.0.2
//! under the same writer (tests/common/writer.rs: one insert every 20 ms, a statement given
//! up after 1 s).
//!
//! - pgha: a 3-instance PgCluster with quorum synchronous replication (`number: 1`) and the
//!   default failover settings on the local cluster of e2e/; the writer goes through
//!   `orders-rw`. Faults on the primary: pod deleted with grace 0, every process killed,
//!   frozen, its node agent stopped, partitioned.
//! - Patroni: etcd and 3 members on loopback (support/patroni.rs), with Patroni's defaults and
//!   tuned; the writer goes to whichever member accepts writes. Fault: the leader's Patroni
//!   and Postgres killed.
//!
//! - The control plane away: the kube-apiserver (pgha) or etcd (Patroni, failsafe_mode off
//!   and on) frozen for 20 s while everything else goes on.
//!
//! Run: `make bench` or `cargo bench --bench failover` as root; `-- patroni` or `-- pgha` runs
//! one side and only prints; `-- outage` runs only the control-plane rows and writes them; `-- fleet` runs a kill and a
//! partition with the cluster alone and beside `PGHA_BENCH_IDLE` (50) idle 1-instance
//! clusters and writes those (`failover-fleet`). `PGHA_BENCH_RUNS` sets the runs per fault (10). Writes the
//! figures into BENCHMARKS.md between the `failover` markers.

#[allow(dead_code)]
#[path = "../tests/common/eventually.rs"]
mod eventually;
#[path = "../tests/common/faults.rs"]
mod faults;
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
#[path = "support/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "support/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../tests/common/writer.rs"]
mod writer;

use std::time::{Duration, Instant, SystemTime};

use pgha::api::cluster::Failover;

use eventually::eventually as wait_for;
use faults::{Kind, inject, undo};
use ha::{Client, EVERY, NS, Pgha, Seen, within};
use patroni::{Patroni, Settings};
use report::{max, median, secs};

/// The goal at pgha's default settings, for every fault.
const GOAL_MEDIAN: Duration = Duration::from_secs(5);
const GOAL_MAX: Duration = Duration::from_secs(8);
/// Control-plane outages per tool and configuration: each takes the outage and a recovery.
const OUTAGE_RUNS: usize = 3;

/// One fault as the client saw it.
struct Run {
    seen: Seen,
    /// Whether a replica took over (pgha may restart the primary in place instead).
    failed_over: bool,
    /// pgha only: where the time went.
    parts: Option<Parts>,
}

/// The runs of one fault with one tool.
struct Series {
    fault: &'static str,
    tool: String,
    runs: Vec<Run>,
    /// Runs after which the cluster did not recover: what did not happen.
    failures: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Patroni

const PATRONI_KILL: &str = "Patroni and Postgres killed (SIGKILL)";

async fn patroni_side(runs: usize) -> Vec<Series> {
    let mut out = Vec::new();
    // Each configuration on its own addresses (127.0.0.1x, 127.0.0.2x) and its own etcd.
    for (block, settings) in [(1, Settings::TUNED), (2, Settings::DEFAULT)] {
        let mut patroni = Patroni::start(settings, block).await;
        let mut client = Client::start(patroni.target()).await;
        let mut done = Vec::new();
        for _ in 0..runs {
            done.push(patroni_run(&mut patroni, &mut client, settings).await);
        }
        out.push(Series {
            fault: PATRONI_KILL,
            tool: format!("Patroni 3.0.2 ({})", settings.label()),
            runs: done,
            failures: Vec::new(),
        });
    }
    out
}

/// Kills the leader, waits for a new one and for writes, then restarts the old leader and
/// waits until it streams from the new one.
async fn patroni_run(patroni: &mut Patroni, client: &mut Client, settings: Settings) -> Run {
    let view = &*patroni;
    let leader = wait_for(Duration::from_secs(180), "Patroni whole", || {
        view.healthy_leader()
    })
    .await;
    let at = Instant::now();
    patroni.kill(leader);
    let view = &*patroni;
    let new = wait_for(Duration::from_secs(120), "a new Patroni leader", || {
        view.new_primary(leader)
    })
    .await;
    client.wait_for_write(Instant::now()).await.unwrap();
    patroni.restart(leader);
    let view = &*patroni;
    wait_for(Duration::from_secs(180), "the old leader rejoined", || {
        view.healthy_leader()
    })
    .await;
    let (host, port) = patroni.postgres(new);
    let run = Run {
        seen: client.seen(at, (&host, port)).await,
        failed_over: true,
        parts: None,
    };
    println!(
        "Patroni ({}): {} → {}, first write after {}, outage {}, {} rows lost",
        settings.label(),
        patroni.name(leader),
        patroni.name(new),
        secs(run.seen.first_write),
        secs(run.seen.outage),
        run.seen.lost
    );
    run
}

// ---------------------------------------------------------------------------------------------
// pgha

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::DeleteNow,
        Kind::Kill,
        Kind::Freeze,
        Kind::NodeStop,
        Kind::Partition,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::DeleteNow => "pod deleted with grace 0",
            Kind::Kill => "every process killed (SIGKILL)",
            Kind::Freeze => "frozen (SIGSTOP) until the new primary serves",
            Kind::NodeStop => "node agent stopped until the new primary serves",
            Kind::Partition => "partitioned (iptables) until the new primary serves",
        }
    }

    /// Whether the fault lasts until another primary serves (the others end by themselves).
    fn undone(self) -> bool {
        matches!(self, Kind::Freeze | Kind::NodeStop | Kind::Partition)
    }
}

/// Where a pgha failover's time went, in seconds, from the fault's wall-clock time and the
/// status's `lastFailover` (the API server runs on the same machine clock). Signed: the
/// Service may switch before the operator records the failover as completed.
#[derive(Clone, Copy)]
struct Parts {
    /// Fault → failover started: the Lease's expiry or a fence.
    detection: f64,
    /// Started → completed: promotion and the agent's report of it.
    promotion: f64,
    /// Completed → first write: the Service switching to the new primary.
    switch: f64,
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

impl Pgha {
    /// One fault on the primary, then back to Healthy: either a replica took over and the
    /// old primary follows it, or the old primary came back in place (its pod re-created or
    /// restarted before its Lease ran out). Err says what did not happen.
    async fn run(&mut self, kind: Kind) -> Result<Run, String> {
        let old = self.settle().await?;
        let (at, at_wall) = (Instant::now(), SystemTime::now());
        let node = inject(&self.cluster, &self.kube, kind, (NS, &old)).await;
        let recovered = self.recover(kind, &old, at).await;
        // The pod may be gone by now; then there is nothing to undo.
        let _ = undo(&self.cluster, kind, (NS, &old), node.as_deref());
        recovered?;
        let new = self.settle().await?;
        let endpoint = self.instances.get(&new).await.unwrap().status.unwrap();
        let endpoint = endpoint.endpoint.unwrap();
        let primary = (endpoint.host.as_str(), endpoint.port);
        let mut run = Run {
            seen: self.client.seen(at, primary).await,
            failed_over: new != old,
            parts: None,
        };
        let how = if new == old {
            "restarted in place".to_string()
        } else {
            let failover = self.status().await.unwrap().last_failover.unwrap();
            assert_eq!((&failover.from, &failover.to), (&old, &new));
            let parts = self.parts(&failover, at_wall, run.seen.first_write).await;
            run.parts = Some(parts);
            format!(
                "{}; detection {:.2} s, promotion {:.2} s, switch {:.2} s",
                failover.reason, parts.detection, parts.promotion, parts.switch
            )
        };
        println!(
            "pgha {kind:?}: {old} → {new}, first write after {}, outage {}, {} rows lost ({how})",
            secs(run.seen.first_write),
            secs(run.seen.outage),
            run.seen.lost,
        );
        Ok(run)
    }

    /// Waits until writes go on after the fault: on another primary for the faults that last
    /// until then, on any primary for the others.
    async fn recover(&self, kind: Kind, old: &str, at: Instant) -> Result<(), String> {
        if !kind.undone() {
            return self.client.wait_for_write(at).await;
        }
        within(Duration::from_secs(60), "new primary", || async {
            let status = self.status().await?;
            let now = status.current_primary?;
            (now != old && status.failover.is_none()).then_some(())
        })
        .await?;
        self.client.wait_for_write(Instant::now()).await
    }

    async fn parts(&self, failover: &Failover, at: SystemTime, first_write: Duration) -> Parts {
        let started = self.precise(&failover.started, "FailoverStarted").await;
        let completed = failover.completed.as_ref().expect("a completed failover");
        let completed = self.precise(completed, "FailoverCompleted").await;
        Parts {
            detection: seconds_between(at, started),
            promotion: seconds_between(started, completed),
            switch: seconds_between(completed, at + first_write),
        }
    }
}

async fn pgha_side(runs: usize) -> Vec<Series> {
    let mut pgha = Pgha::start(11).await;
    rounds(&mut pgha, &Kind::ALL, runs, "pgha (defaults: Lease 3 s)").await
}

/// `runs` rounds of every fault in `kinds` on pgha's cluster, one series per fault.
async fn rounds(pgha: &mut Pgha, kinds: &[Kind], runs: usize, tool: &str) -> Vec<Series> {
    let mut done: Vec<Series> = kinds
        .iter()
        .map(|kind| Series {
            fault: kind.label(),
            tool: tool.into(),
            runs: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    // Round after round of every fault, so that a drift in the machine's load spreads evenly.
    for round in 1..=runs {
        for (kind, series) in kinds.iter().zip(&mut done) {
            match pgha.run(*kind).await {
                Ok(run) => series.runs.push(run),
                Err(symptom) => {
                    let what = format!("{kind:?}-{round}");
                    series.failures.push(pgha.give_up(&what, &symptom).await);
                }
            }
        }
    }
    done
}

// ---------------------------------------------------------------------------------------------
// Beside a fleet: the same cluster's failover alone, then with idle clusters on the same
// operator and API server (issue "The database outlives the control plane", item 6)

const FLEET_KINDS: [Kind; 2] = [Kind::Kill, Kind::Partition];
const FLEET_RUNS: usize = 3;

async fn fleet(idle: usize) -> String {
    let mut pgha = Pgha::start(11).await;
    let mut all = rounds(&mut pgha, &FLEET_KINDS, FLEET_RUNS, "pgha, alone").await;
    let alone_rss = operator_mib(&pgha).await;
    for i in 0..idle {
        install::create_plain(&pgha.clusters, &format!("idle-{i}"), 1).await;
    }
    for i in 0..idle {
        let name = format!("idle-{i}");
        wait_for(Duration::from_secs(1200), &name, || {
            install::healthy(&pgha.clusters, &name, 1)
        })
        .await;
    }
    let beside = format!("pgha, beside {idle} idle 1-instance clusters");
    all.extend(rounds(&mut pgha, &FLEET_KINDS, FLEET_RUNS, &beside).await);
    let fleet_rss = operator_mib(&pgha).await;
    let ratios: Vec<String> = FLEET_KINDS
        .iter()
        .map(|kind| {
            let of = |tool: &str| {
                all.iter()
                    .find(|s| s.fault == kind.label() && s.tool.starts_with(tool))
                    .map(first_writes)
                    .filter(|t| !t.is_empty())
                    .map(|t| median(&t).as_secs_f64())
            };
            match (of("pgha, alone"), of("pgha, beside")) {
                (Some(alone), Some(beside)) => format!(
                    "{}: {beside:.2} s / {alone:.2} s = {:.2}",
                    kind.label(),
                    beside / alone
                ),
                _ => format!("{}: no successful run to compare", kind.label()),
            }
        })
        .collect();
    format!(
        "{header}\
         The failover benchmark's cluster and writer (above), {FLEET_RUNS} runs of each fault \
         with the cluster alone on the operator, then the same after {idle} idle 1-instance \
         PgClusters came up beside it (same operator, same API server, same 2 cores). Goal: \
         the busy cluster's failover within 10 % of its time alone; the leading operator \
         ≤ 60 MiB.\n\n\
         {table}\n{failures}\
         Fault → first write, median beside the fleet / alone: {ratios}. The leading \
         operator's RSS: {alone_rss:.1} MiB alone, {fleet_rss:.1} MiB beside the fleet.\n",
        header = report::header("cargo bench --bench failover -- fleet"),
        table = results_table(&all),
        failures = failures(&all),
        ratios = ratios.join("; "),
    )
}

/// The leading operator's resident memory.
async fn operator_mib(pgha: &Pgha) -> f64 {
    let leader = install::leader(&pgha.kube).await;
    let pid = process::operator_pid(pgha.cluster.state_dir(), &leader);
    process::rss_kib(pid) as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// The control plane away: the Kubernetes API for pgha, etcd for Patroni

const OUTAGE: Duration = Duration::from_secs(20);
const CONTROL_PLANE: &str =
    "control plane frozen 20 s (pgha: kube-apiserver, Patroni: etcd; SIGSTOP)";

async fn patroni_outages(runs: usize) -> Vec<Series> {
    let mut out = Vec::new();
    for (block, settings) in [
        (3, Settings::TUNED),
        (4, Settings::TUNED.with_failsafe()),
        (5, Settings::DEFAULT),
    ] {
        let mut patroni = Patroni::start(settings, block).await;
        let mut client = Client::start(patroni.target()).await;
        let mut done = Vec::new();
        for _ in 0..runs {
            done.push(patroni_outage(&mut patroni, &mut client, settings).await);
        }
        out.push(Series {
            fault: CONTROL_PLANE,
            tool: format!("Patroni 3.0.2 ({})", settings.label()),
            runs: done,
            failures: Vec::new(),
        });
    }
    out
}

/// Freezes etcd for [`OUTAGE`], then waits until Patroni is whole and takes writes again.
async fn patroni_outage(patroni: &mut Patroni, client: &mut Client, settings: Settings) -> Run {
    let view = &*patroni;
    let leader = wait_for(Duration::from_secs(180), "Patroni whole", || {
        view.healthy_leader()
    })
    .await;
    let at = Instant::now();
    patroni.pause_etcd(true);
    tokio::time::sleep(OUTAGE).await;
    patroni.pause_etcd(false);
    let view = &*patroni;
    let after = wait_for(Duration::from_secs(180), "Patroni whole again", || {
        view.healthy_leader()
    })
    .await;
    client.wait_for_write(at + OUTAGE).await.unwrap();
    let (host, port) = patroni.postgres(after);
    let run = Run {
        seen: client.seen(at, (&host, port)).await,
        failed_over: after != leader,
        parts: None,
    };
    println!(
        "Patroni ({}), etcd frozen {} s: {} → {}, longest write gap {}, {} rows lost",
        settings.label(),
        OUTAGE.as_secs(),
        patroni.name(leader),
        patroni.name(after),
        secs(run.seen.outage),
        run.seen.lost
    );
    run
}

impl Pgha {
    /// Freezes the kube-apiserver for [`OUTAGE`], then waits until the cluster is whole.
    async fn api_outage(&mut self) -> Result<Run, String> {
        let old = self.settle().await?;
        let at = Instant::now();
        self.cluster.pause_apiserver(true).unwrap();
        tokio::time::sleep(OUTAGE).await;
        self.cluster.pause_apiserver(false).unwrap();
        let new = self.settle().await?;
        let endpoint = self.instances.get(&new).await.unwrap().status.unwrap();
        let endpoint = endpoint.endpoint.unwrap();
        let run = Run {
            seen: self.client.seen(at, (&endpoint.host, endpoint.port)).await,
            failed_over: new != old,
            parts: None,
        };
        println!(
            "pgha, kube-apiserver frozen {} s: {old} → {new}, longest write gap {}, {} rows lost",
            OUTAGE.as_secs(),
            secs(run.seen.outage),
            run.seen.lost
        );
        Ok(run)
    }
}

async fn pgha_outages(pgha: &mut Pgha, runs: usize) -> Series {
    let mut series = Series {
        fault: CONTROL_PLANE,
        tool: "pgha (defaults: Lease 3 s)".into(),
        runs: Vec::new(),
        failures: Vec::new(),
    };
    for round in 1..=runs {
        match pgha.api_outage().await {
            Ok(run) => series.runs.push(run),
            Err(symptom) => {
                let what = format!("outage-{round}");
                series.failures.push(pgha.give_up(&what, &symptom).await);
            }
        }
    }
    series
}

/// The control-plane rows: runs, failovers, and the longest write gap.
fn outage_table(all: &[Series]) -> String {
    let mut table = String::from(
        "| fault | tool | runs | not recovered | a replica took over | longest write gap, median | max | acknowledged rows lost |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for s in all {
        let gaps: Vec<Duration> = s.runs.iter().map(|r| r.seen.outage).collect();
        table += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.fault,
            s.tool,
            s.runs.len(),
            s.failures.len(),
            s.runs.iter().filter(|r| r.failed_over).count(),
            shown(&gaps, median),
            shown(&gaps, max),
            lost(s)
        );
    }
    table
}

fn outage_report(all: &[Series], runs: usize) -> String {
    format!(
        "{header}\
         The same writer and clusters as above ({runs} runs each). The control plane is frozen \
         for {outage} s while every database process, node and network goes on: for pgha the \
         local cluster's kube-apiserver (the primary's Lease cannot be renewed; its members \
         vouch for it over the pod network, docs/failover.md), for Patroni its etcd (the leader \
         key cannot be updated; with `failsafe_mode` the leader asks the members instead). \
         Goal (issue \"The database outlives the control plane\"): longest write gap ≤ 1 s, no \
         failover, nothing lost.\n\n{table}",
        header = report::header("cargo bench --bench failover -- outage"),
        outage = OUTAGE.as_secs(),
        table = outage_table(all),
    )
}

// ---------------------------------------------------------------------------------------------
// Report

fn first_writes(series: &Series) -> Vec<Duration> {
    series.runs.iter().map(|r| r.seen.first_write).collect()
}

fn lost(series: &Series) -> usize {
    series.runs.iter().map(|r| r.seen.lost).sum()
}

/// `statistic` of `values` in seconds, or a dash when no run succeeded.
fn shown(values: &[Duration], statistic: fn(&[Duration]) -> Duration) -> String {
    match values {
        [] => "—".into(),
        _ => secs(statistic(values)),
    }
}

fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n.is_multiple_of(2) {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    } else {
        sorted[n / 2]
    }
}

fn results_table(all: &[Series]) -> String {
    let mut table = String::from(
        "| fault on the primary | tool | runs | not recovered | a replica took over | fault → first write, median | max | write outage, median | acknowledged rows lost |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for s in all {
        let outages: Vec<Duration> = s.runs.iter().map(|r| r.seen.outage).collect();
        table += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.fault,
            s.tool,
            s.runs.len(),
            s.failures.len(),
            s.runs.iter().filter(|r| r.failed_over).count(),
            shown(&first_writes(s), median),
            shown(&first_writes(s), max),
            shown(&outages, median),
            lost(s)
        );
    }
    table
}

/// pgha's medians per part, and the goal per fault.
fn parts_table(pgha: &[&Series]) -> String {
    let mut table = String::from(
        "| fault (pgha) | fault → failover started | started → completed | completed → first write | goal: median ≤ 5 s, max ≤ 8 s, 0 lost |\n\
         |---|---|---|---|---|\n",
    );
    for s in pgha {
        let parts: Vec<Parts> = s.runs.iter().filter_map(|r| r.parts).collect();
        // Runs where the primary came back in place have no failover to split.
        let part = |f: fn(&Parts) -> f64| match parts.len() {
            0 => "—".to_string(),
            _ => format!("{:.2} s", median_of(parts.iter().map(f))),
        };
        let times = first_writes(s);
        let met = !times.is_empty()
            && s.failures.is_empty()
            && median(&times) <= GOAL_MEDIAN
            && max(&times) <= GOAL_MAX
            && lost(s) == 0;
        table += &format!(
            "| {} | {} | {} | {} | {} |\n",
            s.fault,
            part(|p| p.detection),
            part(|p| p.promotion),
            part(|p| p.switch),
            if met { "met" } else { "**not met**" }
        );
    }
    table
}

/// What did not happen in the runs that failed.
fn failures(all: &[Series]) -> String {
    let lines: Vec<String> = all
        .iter()
        .flat_map(|s| {
            s.failures
                .iter()
                .map(move |f| format!("- {}: {f}\n", s.fault))
        })
        .collect();
    match lines.len() {
        0 => String::new(),
        _ => format!(
            "Runs after which the cluster did not recover (the benchmark went on with a new PgCluster):\n\n{}\n",
            lines.concat()
        ),
    }
}

/// pgha's median for a killed primary against each Patroni configuration's.
fn kill_ratio(pgha: Option<&Series>, patroni: &[&Series]) -> String {
    let Some(pgha) = pgha.filter(|s| !s.runs.is_empty()) else {
        return String::new();
    };
    let ours = median(&first_writes(pgha));
    let each: Vec<String> = patroni
        .iter()
        .map(|p| {
            let theirs = median(&first_writes(p));
            format!(
                "{} / {} = {:.2} against {}",
                secs(ours),
                secs(theirs),
                ours.as_secs_f64() / theirs.as_secs_f64(),
                p.tool
            )
        })
        .collect();
    format!(
        "Killed primary, median fault → first write, pgha / Patroni: {}.\n\n",
        each.join("; ")
    )
}

fn report(all: &[Series], took: Duration) -> String {
    let pgha: Vec<&Series> = all.iter().filter(|s| s.fault != PATRONI_KILL).collect();
    let patroni: Vec<&Series> = all.iter().filter(|s| s.fault == PATRONI_KILL).collect();
    let pgha_kill = pgha.iter().copied().find(|s| s.fault == Kind::Kill.label());
    format!(
        "{header}\
         One writer for both (tests/common/writer.rs): an insert every {every} ms, a statement \
         given up after 1 s, a row counted once its commit returned. pgha: the local cluster of \
         e2e/, the operator from deploy/, a 3-instance PgCluster with `replication: \
         {{synchronous: {{mode: quorum, number: 1}}}}` and the default failover settings, written \
         through `orders-rw`; after each run the old primary rejoins as a replica on the new \
         timeline and the cluster is Healthy before the next. Patroni 3.0.2 (Debian): one etcd \
         3.4.23 and 3 members on loopback, Postgres 15, asynchronous replication (Patroni's \
         default, `synchronous_mode: false`), written through the member that accepts writes \
         (libpq multi-host, `target_session_attrs=read-write`); after each run the killed \
         member is restarted and streams from the new leader. The first write is the one that \
         ends the longest gap after the fault, i.e. the first on the new primary; where the old \
         primary can still write until it is fenced (node agent stopped), the outage is shorter \
         than that. A pgha run counts as a failover when a replica took over, and otherwise as \
         the primary restarted in place.\n\n\
         {results}\n{failures}{ratio}\
         The goal (issue \"Unplanned failover with fencing\"): at pgha's default settings, for \
         every fault, fault → first write ≤ {goal_median} s median and ≤ {goal_max} s max, and no \
         acknowledged commit lost with synchronous replication. \
         Where pgha's time goes (medians; from `status.lastFailover` {{started, completed}}, \
         refined to the microsecond by the FailoverStarted / FailoverCompleted Events, and the \
         fault's time on the same machine clock):\n\n{parts}\n\
         The whole benchmark took {minutes:.0} minutes.\n",
        header = report::header("cargo bench --bench failover"),
        every = EVERY.as_millis(),
        goal_median = GOAL_MEDIAN.as_secs(),
        goal_max = GOAL_MAX.as_secs(),
        results = results_table(all),
        failures = failures(all),
        ratio = kill_ratio(pgha_kill, &patroni),
        parts = parts_table(&pgha),
        minutes = took.as_secs_f64() / 60.0,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Cargo passes `--bench`; a bare word picks one side.
    let side = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runs: usize = std::env::var("PGHA_BENCH_RUNS")
        .ok()
        .map_or(10, |v| v.parse().expect("PGHA_BENCH_RUNS: a number"));
    let started = Instant::now();
    if side.as_deref() == Some("fleet") {
        let report = fleet(report::knob("PGHA_BENCH_IDLE", 50) as usize).await;
        println!("{report}");
        report::write_section("failover-fleet", "Failover beside a fleet", &report);
        return;
    }
    if matches!(side.as_deref(), None | Some("outage")) {
        let mut outages = patroni_outages(OUTAGE_RUNS).await;
        let mut pgha = Pgha::start(11).await;
        outages.push(pgha_outages(&mut pgha, OUTAGE_RUNS).await);
        drop(pgha);
        let report = outage_report(&outages, OUTAGE_RUNS);
        println!("{report}");
        report::write_section(
            "failover-api-outage",
            "Failover: the control plane away",
            &report,
        );
        if side.is_some() {
            return;
        }
    }
    let mut all = Vec::new();
    if side.as_deref() != Some("pgha") {
        all.extend(patroni_side(runs).await);
        println!("{}", results_table(&all));
    }
    if side.as_deref() != Some("patroni") {
        all.extend(pgha_side(runs).await);
    }
    let report = report(&all, started.elapsed());
    println!("{report}");
    if side.is_none() {
        report::write_section("failover", "Failover", &report);
    }
}
