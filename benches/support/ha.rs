//! What the HA benchmarks share: the writer and its check for lost rows, and a PgCluster on
//! the local cluster of e2e/ that is replaced when a run leaves it broken.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use pgha::api::cluster::PgClusterStatus;
use pgha::api::instance::{InstanceRole, PgInstanceStatus};
use pgha::api::{PgCluster, PgInstance};
use pgha_e2e::Cluster;

use crate::eventually::eventually as wait_for;
use crate::install;
use crate::writer::{Target, Writer, connect, missing};

/// The writer inserts this often.
pub const EVERY: Duration = Duration::from_millis(20);
pub const NS: &str = "shop";

/// What the writer saw of one fault or command.
pub struct Seen {
    /// Fault → the acknowledged write that ended the outage: the first on the new primary.
    pub first_write: Duration,
    /// The longest time without an acknowledged write after the fault.
    pub outage: Duration,
    /// Acknowledged rows the new primary does not have.
    pub lost: usize,
}

/// Like `wait_for`, but a failed run instead of a panic when `limit` passes.
pub async fn within<T, F, Fut>(limit: Duration, what: &str, check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    tokio::time::timeout(limit, wait_for(limit * 2, what, check))
        .await
        .map_err(|_| format!("no {what} within {} s", limit.as_secs()))
}

/// The writer of one side, and how far its rows have been checked for losses.
pub struct Client {
    pub writer: Writer,
    target: Target,
    checked: usize,
}

impl Client {
    pub async fn start(target: Target) -> Self {
        Self {
            writer: Writer::start(target.clone(), EVERY).await,
            target,
            checked: 0,
        }
    }

    /// Returns once a write is acknowledged after `since`: the outage is over.
    pub async fn wait_for_write(&self, since: Instant) -> Result<(), String> {
        within(Duration::from_secs(60), "write after the fault", || async {
            self.writer.first_ack_after(since)
        })
        .await
        .map(drop)
    }

    /// What the client saw of the fault (or command) at `at`, once the cluster is whole
    /// again; `primary` is the (new) primary's address. Checks the rows acknowledged since
    /// the last run.
    pub async fn seen(&mut self, at: Instant, primary: (&str, u16)) -> Seen {
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
        Seen {
            first_write,
            outage,
            lost,
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
pub fn keep_logs_on_panic(dir: &Path, name: &str) {
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

/// The operator on the local cluster `index` with one PgCluster at a time; a cluster that fails a run
/// is replaced by a new one (`orders`, `orders2`, …) so that the other runs go on.
pub struct Pgha {
    pub name: String,
    generation: usize,
    pub client: Client,
    pub kube: kube::Client,
    pub clusters: Api<PgCluster>,
    pub instances: Api<PgInstance>,
    pub cluster: Cluster,
}

impl Drop for Pgha {
    fn drop(&mut self) {
        keep_logs_on_panic(&self.cluster.state_dir().join("pods"), "pgha-pods");
    }
}

impl Pgha {
    pub async fn start(index: u8) -> Self {
        let (cluster, kube) = install::installed(index).await;
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

    /// A run that left the cluster broken: says so, keeps the evidence under
    /// target/failover-logs/, and goes on with a new PgCluster. Returns the failure as the
    /// report lists it.
    pub async fn give_up(&mut self, what: &str, symptom: &str) -> String {
        let label = format!("{}-{what}", self.name);
        println!("pgha {what} on {}: FAILED: {symptom}", self.name);
        self.keep_evidence(&label);
        self.replace().await;
        format!("{symptom} (target/failover-logs/{label})")
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

    pub async fn status(&self) -> Option<PgClusterStatus> {
        self.clusters.get(&self.name).await.ok()?.status
    }

    /// The primary once the cluster is whole and stays so for 3 s (a failover may follow a
    /// restart in place): Healthy, no failover under way, every other instance a ready
    /// replica on the primary's timeline.
    pub async fn settle(&self) -> Result<String, String> {
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

    pub async fn whole(&self) -> Option<String> {
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

    /// A status time refined to the microsecond: Kubernetes writes RFC 3339 times in whole
    /// seconds, but the Event the operator records with each step carries microseconds. The
    /// Event's time is used when it falls in that second or the next (it follows the status
    /// by milliseconds).
    pub async fn precise(&self, second: &Time, reason: &str) -> SystemTime {
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
