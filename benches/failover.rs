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
//! Run: `make bench` or `cargo bench --bench failover` as root; `-- patroni` or `-- pgha` runs
//! one side and only prints. `PGHA_BENCH_RUNS` sets the runs per fault (10). Writes the
//! figures into BENCHMARKS.md between the `failover` markers.

#[allow(dead_code)]
#[path = "../tests/common/eventually.rs"]
mod eventually;
#[path = "../tests/common/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "../tests/common/operator.rs"]
mod install;
#[path = "support/patroni.rs"]
mod patroni;
#[allow(dead_code)]
#[path = "support/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../tests/common/writer.rs"]
mod writer;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use pgha::api::cluster::{Failover, PgClusterStatus};
use pgha::api::instance::{InstanceRole, PgInstanceStatus};
use pgha::api::{PgCluster, PgInstance};
use pgha_e2e::Cluster;

use eventually::eventually as wait_for;
use faults::{Kind, inject, undo};
use patroni::{Patroni, Settings};
use report::{max, median, secs};
use writer::{Target, Writer, connect, missing};

const EVERY: Duration = Duration::from_millis(20);
const NS: &str = "shop";
/// The goal at pgha's default settings, for every fault.
const GOAL_MEDIAN: Duration = Duration::from_secs(5);
const GOAL_MAX: Duration = Duration::from_secs(8);

/// One fault as the client saw it.
struct Run {
    /// Fault → the acknowledged write that ended the outage: the first on the new primary.
    first_write: Duration,
    /// The longest time without an acknowledged write after the fault.
    outage: Duration,
    /// Acknowledged rows the new primary does not have.
    lost: usize,
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

/// Like `wait_for`, but a failed run instead of a panic when `limit` passes.
async fn within<T, F, Fut>(limit: Duration, what: &str, check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    tokio::time::timeout(limit, wait_for(limit * 2, what, check))
        .await
        .map_err(|_| format!("no {what} within {} s", limit.as_secs()))
}

/// The writer of one side, and how far its rows have been checked for losses.
struct Client {
    writer: Writer,
    target: Target,
    checked: usize,
}

impl Client {
    async fn start(target: Target) -> Self {
        Self {
            writer: Writer::start(target.clone(), EVERY).await,
            target,
            checked: 0,
        }
    }

    /// Returns once a write is acknowledged after `since`: the outage is over.
    async fn wait_for_write(&self, since: Instant) -> Result<(), String> {
        within(Duration::from_secs(60), "write after the fault", || async {
            self.writer.first_ack_after(since)
        })
        .await
        .map(drop)
    }

    /// What the client saw of the fault at `at`, once the cluster is whole again; `primary`
    /// is the (new) primary's address. Checks the rows acknowledged since the last run.
    async fn run(&mut self, at: Instant, primary: (&str, u16), failed_over: bool) -> Run {
        // A few more writes, so that the outage surely ended before `until`.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let until = Instant::now();
        let outage = self.writer.longest_gap(at, until);
        let first_write = end_of_gap(&self.writer, at, until, outage) - at;
        let acked = self.writer.acked();
        let on_new = connect(&self.target, primary.0, primary.1)
            .await
            .expect("a connection to the new primary");
        let lost = missing(&on_new, &acked[self.checked..]).await.len();
        self.checked = acked.len();
        Run {
            first_write,
            outage,
            lost,
            failed_over,
            parts: None,
        }
    }
}

/// When the write that ended the gap of `length` after `at` was acknowledged. The writer hands
/// out its acknowledgements one at a time; a gap is measured from `at` as `longest_gap` does.
fn end_of_gap(writer: &Writer, at: Instant, until: Instant, length: Duration) -> Instant {
    let acks: Vec<Instant> = std::iter::successors(Some(at), |t| writer.first_ack_after(*t))
        .take_while(|t| *t <= until)
        .collect();
    acks.windows(2)
        .find(|w| w[1] - w[0] == length)
        .map(|w| w[1])
        .expect("the outage ended before the cluster was whole again")
}

/// Copies `dir` to target/failover-logs/`name` when a run failed, before its owner deletes it.
fn keep_logs_on_panic(dir: &Path, name: &str) {
    if !std::thread::panicking() {
        return;
    }
    let to = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/failover-logs");
    let _ = std::fs::create_dir_all(&to);
    let _ = std::process::Command::new("cp")
        .arg("-a")
        .arg(dir)
        .arg(to.join(name))
        .status();
    eprintln!("logs kept in {}", to.join(name).display());
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
    let run = client.run(at, (&host, port), true).await;
    println!(
        "Patroni ({}): {} → {}, first write after {}, outage {}, {} rows lost",
        settings.label(),
        patroni.name(leader),
        patroni.name(new),
        secs(run.first_write),
        secs(run.outage),
        run.lost
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

/// The operator on cluster index 11 with one PgCluster at a time; a cluster that fails a run
/// is replaced by a new one (`orders`, `orders2`, …) so that the other runs go on.
struct Pgha {
    name: String,
    generation: usize,
    client: Client,
    kube: kube::Client,
    clusters: Api<PgCluster>,
    instances: Api<PgInstance>,
    cluster: Cluster,
}

impl Drop for Pgha {
    fn drop(&mut self) {
        keep_logs_on_panic(&self.cluster.state_dir().join("pods"), "pgha-pods");
    }
}

impl Pgha {
    async fn start() -> Self {
        let (cluster, kube) = install::installed(11).await;
        let clusters: Api<PgCluster> = Api::namespaced(kube.clone(), NS);
        let client = create(&cluster, &kube, "orders").await;
        Self {
            name: "orders".into(),
            generation: 1,
            client,
            instances: Api::namespaced(kube.clone(), NS),
            clusters,
            kube,
            cluster,
        }
    }

    /// Deletes the current PgCluster and goes on with a new one.
    async fn replace(&mut self) {
        let _ = self.clusters.delete(&self.name, &Default::default()).await;
        let gone = within(Duration::from_secs(120), "PgCluster deleted", || async {
            let pods: Api<Pod> = Api::namespaced(self.kube.clone(), NS);
            let list = pods.list(&Default::default()).await.ok()?;
            let prefix = format!("{}-", self.name);
            (!list.items.iter().any(|p| p.name_any().starts_with(&prefix))).then_some(())
        })
        .await;
        if let Err(e) = gone {
            println!("{}: {e}; going on beside it", self.name);
        }
        self.generation += 1;
        self.name = format!("orders{}", self.generation);
        self.client = create(&self.cluster, &self.kube, &self.name).await;
    }

    async fn status(&self) -> Option<PgClusterStatus> {
        self.clusters.get(&self.name).await.ok()?.status
    }

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
        let mut run = self.client.run(at, primary, new != old).await;
        let how = if new == old {
            "restarted in place".to_string()
        } else {
            let failover = self.status().await.unwrap().last_failover.unwrap();
            assert_eq!((&failover.from, &failover.to), (&old, &new));
            let parts = self.parts(&failover, at_wall, run.first_write).await;
            run.parts = Some(parts);
            format!(
                "{}; detection {:.2} s, promotion {:.2} s, switch {:.2} s",
                failover.reason, parts.detection, parts.promotion, parts.switch
            )
        };
        println!(
            "pgha {kind:?}: {old} → {new}, first write after {}, outage {}, {} rows lost ({how})",
            secs(run.first_write),
            secs(run.outage),
            run.lost,
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

    /// The primary once the cluster is whole and stays so for 3 s (a failover may follow a
    /// restart in place): Healthy, no failover under way, every other instance a ready
    /// replica on the primary's timeline.
    async fn settle(&self) -> Result<String, String> {
        loop {
            // A rejoin (rewind or re-clone of this small database) takes seconds.
            let limit = Duration::from_secs(90);
            let primary = within(limit, "whole cluster", || self.whole()).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            if self.whole().await.as_ref() == Some(&primary) {
                return Ok(primary);
            }
        }
    }

    async fn whole(&self) -> Option<String> {
        let cluster = install::healthy(&self.clusters, &self.name, 3).await?;
        let status = cluster.status?;
        let primary = status
            .current_primary
            .filter(|_| status.failover.is_none())?;
        let list = self.instances.list(&Default::default()).await.ok()?;
        let statuses: Vec<(String, PgInstanceStatus)> = list
            .items
            .into_iter()
            .filter(|i| i.name_any().starts_with(&format!("{}-", self.name)))
            .map(|i| Some((i.name_any(), i.status?)))
            .collect::<Option<_>>()?;
        let timeline = statuses
            .iter()
            .find(|(name, _)| *name == primary)?
            .1
            .timeline;
        let follows = |(name, s): &(String, PgInstanceStatus)| {
            let role = if *name == primary {
                InstanceRole::Primary
            } else {
                InstanceRole::Replica
            };
            s.ready && s.role == Some(role) && s.timeline.is_some() && s.timeline == timeline
        };
        statuses.iter().all(follows).then_some(primary)
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

    /// A status time refined to the microsecond: Kubernetes writes RFC 3339 times in whole
    /// seconds, but the Event the operator records with each step carries microseconds. The
    /// Event's time is used when it falls in that second or the next (it follows the status
    /// by milliseconds).
    async fn precise(&self, second: &Time, reason: &str) -> SystemTime {
        let coarse = second.0;
        let fine = self.last_event(reason).await.filter(|t| {
            let after = t.as_millisecond() - coarse.as_millisecond();
            (0..2000).contains(&after)
        });
        SystemTime::from(fine.unwrap_or(coarse))
    }

    /// When the operator last recorded the Event `reason` for the cluster.
    async fn last_event(&self, reason: &str) -> Option<Timestamp> {
        let events: Api<Event> = Api::namespaced(self.kube.clone(), NS);
        let list = events.list(&Default::default()).await.ok()?;
        let ours =
            |e: &Event| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&self.name);
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason) && ours(e))
            .filter_map(|e| Some(e.series.map(|s| s.last_observed_time).or(e.event_time)?.0))
            .max()
    }

    /// Saves what a person needs to see why a run failed: the pods' logs, the PgCluster and
    /// PgInstances, the Leases and the Events, under target/failover-logs/`label`.
    fn keep_evidence(&self, label: &str) {
        let to = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/failover-logs")
            .join(label);
        std::fs::create_dir_all(&to).unwrap();
        let pods = self.cluster.state_dir().join("pods");
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(pods)
            .arg(&to)
            .status();
        assert!(copied.is_ok_and(|s| s.success()), "copying the pods' logs");
        let get =
            |what: &str| install::kubectl(&self.cluster, &["-n", NS, "get", what, "-o", "yaml"]);
        let state = [
            "pgclusters",
            "pginstances",
            "leases",
            "pods",
            "events.events.k8s.io",
        ]
        .map(get)
        .join("\n---\n");
        std::fs::write(to.join("state.yaml"), state).unwrap();
        println!("evidence kept in {}", to.display());
    }
}

/// Creates the PgCluster `name` (3 instances, quorum 1, default failover settings), waits
/// until it is Healthy and starts the writer on its `-rw` Service.
async fn create(cluster: &Cluster, kube: &kube::Client, name: &str) -> Client {
    let clusters: Api<PgCluster> = Api::namespaced(kube.clone(), NS);
    let spec = format!(
        "metadata: {{name: {name}}}\nspec:\n  instances: 3\n  storage: {{size: 1Gi}}\n  \
         replication: {{synchronous: {{mode: quorum, number: 1}}}}\n"
    );
    let resource: PgCluster = serde_saphyr::from_str(&spec).unwrap();
    clusters
        .create(&PostParams::default(), &resource)
        .await
        .unwrap();
    wait_for(Duration::from_secs(180), "the PgCluster Healthy", || {
        install::healthy(&clusters, name, 3)
    })
    .await;
    Client::start(Target::rw(cluster, kube, NS, name, "app").await).await
}

async fn pgha_side(runs: usize) -> Vec<Series> {
    let mut pgha = Pgha::start().await;
    let mut done: Vec<Series> = Kind::ALL
        .into_iter()
        .map(|kind| Series {
            fault: kind.label(),
            tool: "pgha (defaults: Lease 3 s)".into(),
            runs: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    // Round after round of every fault, so that a drift in the machine's load spreads evenly.
    for round in 1..=runs {
        for (kind, series) in Kind::ALL.into_iter().zip(&mut done) {
            match pgha.run(kind).await {
                Ok(run) => series.runs.push(run),
                Err(symptom) => {
                    let label = format!("{}-{kind:?}-{round}", pgha.name);
                    println!("pgha {kind:?} on {}: FAILED: {symptom}", pgha.name);
                    pgha.keep_evidence(&label);
                    series
                        .failures
                        .push(format!("{symptom} (target/failover-logs/{label})"));
                    pgha.replace().await;
                }
            }
        }
    }
    done
}

// ---------------------------------------------------------------------------------------------
// Report

fn first_writes(series: &Series) -> Vec<Duration> {
    series.runs.iter().map(|r| r.first_write).collect()
}

fn lost(series: &Series) -> usize {
    series.runs.iter().map(|r| r.lost).sum()
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
        let outages: Vec<Duration> = s.runs.iter().map(|r| r.outage).collect();
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
