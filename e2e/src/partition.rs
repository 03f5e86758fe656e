//! Network partitions of single pods, with iptables. Pods share the host's network, so the
//! packet filter tells a pod apart in two ways: by its address (what is sent to it, what it
//! answers from) and by the cgroup v2 cgroup all of its processes run in, because what they
//! send out leaves from 127.0.0.1. The `cgroup` match catches their outgoing packets and,
//! through the kernel's early demux, what arrives for their sockets.
//!
//! Every rule carries the comment `pgha-e2e:<cluster index>:<namespace>/<pod>`: healing removes
//! exactly a pod's rules, and a cluster removes all of its own when it starts and stops.

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cluster::PodRef;
use crate::node::pod_dir;
use crate::{Error, fail};

/// The cgroup v2 hierarchy: beside the v1 controllers (hybrid), or alone.
fn v2_root() -> Option<&'static Path> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|root| root.join("cgroup.controllers").is_file())
}

/// The cgroups of a cluster's pods, relative to the v2 root.
fn cluster_cgroups(cluster: u8) -> String {
    format!("pgha-e2e/{cluster}")
}

/// What the packet filter needs to know of a pod; its node agent keeps it in the pod's
/// directory while the pod runs.
#[derive(Debug)]
pub(crate) struct PodNet {
    cluster: u8,
    ip: Ipv4Addr,
    /// The pod's cgroup, relative to the v2 root (as the `cgroup` match wants it).
    cgroup: String,
}

const FILE: &str = "network";

impl PodNet {
    /// Creates the pod's cgroup, `pgha-e2e/<cluster>/<uid>` (by UID: a pod re-created under
    /// the same name must not share it); None without a v2 hierarchy.
    pub(crate) fn create(cluster: u8, ip: Ipv4Addr, uid: &str) -> Option<Self> {
        let cgroup = format!("{}/{uid}", cluster_cgroups(cluster));
        std::fs::create_dir_all(v2_root()?.join(&cgroup)).ok()?;
        Some(Self {
            cluster,
            ip,
            cgroup,
        })
    }

    /// The cgroup's directory, whose `cgroup.procs` the pod's processes join.
    pub(crate) fn cgroup_dir(&self) -> Option<PathBuf> {
        Some(v2_root()?.join(&self.cgroup))
    }

    fn line(&self) -> String {
        format!("{} {} {}\n", self.cluster, self.ip, self.cgroup)
    }

    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(dir.join(FILE), self.line())
    }

    fn read(state: &Path, pod: &PodRef) -> Result<Self, Error> {
        let path = pod_dir(state, &pod.namespace, &pod.name).join(FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            let why = match v2_root() {
                None => " (partitions need a cgroup v2 hierarchy, and this machine has none)",
                Some(_) => "",
            };
            return Err(fail(format!(
                "pod {}/{} does not run on this cluster{why}",
                pod.namespace, pod.name
            )));
        };
        let mut words = text.split_whitespace();
        let parsed = (|| {
            Some(Self {
                cluster: words.next()?.parse().ok()?,
                ip: words.next()?.parse().ok()?,
                cgroup: words.next()?.to_string(),
            })
        })();
        parsed.ok_or_else(|| fail(format!("{}: unreadable: {text:?}", path.display())))
    }

    /// Once the pod is gone: its rules (they name an address the next pod may get), its
    /// file unless a newer pod of that name has replaced it, then its cgroup.
    pub(crate) fn remove(&self, dir: &Path, pod: &PodRef) {
        let tag = tag(self.cluster, pod);
        let _ = remove_rules(|comment| comment == tag);
        let file = dir.join(FILE);
        if std::fs::read_to_string(&file).is_ok_and(|text| text == self.line()) {
            let _ = std::fs::remove_file(file);
        }
        if let Some(dir) = self.cgroup_dir() {
            remove_cgroup(&dir);
        }
    }

    /// The rules that cut the pod off, each a chain and its match: nothing reaches its
    /// address or comes from it, and nothing passes that its processes send, or receive on
    /// connections they had open.
    fn rules(&self) -> [Vec<String>; 4] {
        let ip = self.ip.to_string();
        let by_cgroup = |chain| words(&[chain, "-m", "cgroup", "--path", &self.cgroup]);
        [
            words(&["INPUT", "-d", &ip]),
            words(&["INPUT", "-s", &ip]),
            by_cgroup("INPUT"),
            by_cgroup("OUTPUT"),
        ]
    }
}

impl PodNet {
    /// The rules that cut the pod's processes off the API server only: what they send to the
    /// `kubernetes` Service and what comes back on those connections.
    fn api_rules(&self) -> [Vec<String>; 2] {
        let api = crate::net::kubernetes_service_ip(self.cluster).to_string();
        let cgroup = ["-m", "cgroup", "--path", &self.cgroup, "-p", "tcp"];
        let mut out = words(&["OUTPUT"]);
        out.extend(words(&cgroup));
        out.extend(words(&["-d", &api, "--dport", "443"]));
        let mut back = words(&["INPUT"]);
        back.extend(words(&cgroup));
        back.extend(words(&["-s", &api, "--sport", "443"]));
        [out, back]
    }
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| w.to_string()).collect()
}

fn tag(cluster: u8, pod: &PodRef) -> String {
    format!("pgha-e2e:{cluster}:{}/{}", pod.namespace, pod.name)
}

/// Cuts a running pod off the network until [`heal`] or its end; the partition outlives
/// container restarts (their processes join the same cgroup). Partitioning twice is a no-op.
pub fn partition(state: &Path, pod: &PodRef) -> Result<(), Error> {
    let net = PodNet::read(state, pod)?;
    add(&net, pod, net.rules().into_iter())
}

/// Cuts a running pod off the API server while it still reaches, and is reached by, every
/// pod: a control plane that this node cannot reach. [`heal`] ends it too.
pub fn partition_from_api(state: &Path, pod: &PodRef) -> Result<(), Error> {
    let net = PodNet::read(state, pod)?;
    add(&net, pod, net.api_rules().into_iter())
}

fn add(net: &PodNet, pod: &PodRef, rules: impl Iterator<Item = Vec<String>>) -> Result<(), Error> {
    let tag = tag(net.cluster, pod);
    let mut rules = rules;
    let added = rules.try_for_each(|mut rule| {
        rule.extend(words(&["-m", "comment", "--comment", &tag, "-j", "DROP"]));
        if rule_exists(&rule)? {
            Ok(())
        } else {
            iptables("-I", &rule).map(drop)
        }
    });
    // Half a partition would pass for a whole one.
    if added.is_err() {
        let _ = remove_rules(|comment| comment == tag);
    }
    added
}

/// Removes the rules [`partition`] added for a pod; healing a pod that is not partitioned
/// is a no-op.
pub fn heal(state: &Path, pod: &PodRef) -> Result<(), Error> {
    let tag = tag(PodNet::read(state, pod)?.cluster, pod);
    remove_rules(|comment| comment == tag)
}

/// Removes what a cluster's partitions left: the rules, then the pods' cgroups (their
/// processes are gone by then).
pub(crate) fn clear(cluster: u8) {
    let prefix = format!("pgha-e2e:{cluster}:");
    let _ = remove_rules(|comment| comment.starts_with(&prefix));
    let Some(root) = v2_root() else { return };
    let dir = root.join(cluster_cgroups(cluster));
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    remove_cgroup(&dir);
}

/// Removes a cgroup, giving killed processes a moment to leave it.
fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.kind() == ErrorKind::ResourceBusy => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// Deletes every rule of the filter table whose comment matches.
fn remove_rules(matches: impl Fn(&str) -> bool) -> Result<(), Error> {
    let listing = iptables("-S", &[])?;
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        // `-A CHAIN … --comment "TAG" …`; our words hold no spaces, so quotes just go.
        let rule: Vec<String> = line
            .split_whitespace()
            .map(|w| w.trim_matches('"').to_string())
            .collect();
        let comment = rule.windows(2).find(|w| w[0] == "--comment");
        if rule.first().is_some_and(|w| w == "-A") && comment.is_some_and(|w| matches(&w[1])) {
            iptables("-D", &rule[1..])?;
        }
    }
    Ok(())
}

fn rule_exists(rule: &[String]) -> Result<bool, Error> {
    let output = run("-C", rule)?;
    // 1 is "no such rule"; anything else is iptables failing.
    match output.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(failed("-C", rule, &output)),
    }
}

/// Runs iptables, which must succeed.
fn iptables(command: &str, rule: &[String]) -> Result<Output, Error> {
    let output = run(command, rule)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(failed(command, rule, &output))
    }
}

fn run(command: &str, rule: &[String]) -> Result<Output, Error> {
    // -w: wait for the lock that iptables-legacy takes instead of failing.
    Command::new("iptables")
        .args(["-w", command])
        .args(rule)
        .output()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => fail(
                "partitions need iptables (with its cgroup match), which is not on PATH: \
                 install the Debian package iptables (scripts/install-deps.sh does)",
            ),
            _ => fail(format!("iptables: {e}")),
        })
}

fn failed(command: &str, rule: &[String], output: &Output) -> Error {
    fail(format!(
        "iptables {command} {}: {}",
        rule.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_address_and_the_cgroup() {
        let net = PodNet {
            cluster: 7,
            ip: Ipv4Addr::new(127, 113, 0, 2),
            cgroup: "pgha-e2e/7/uid".into(),
        };
        let rules: Vec<String> = net.rules().iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            rules,
            [
                "INPUT -d 127.113.0.2",
                "INPUT -s 127.113.0.2",
                "INPUT -m cgroup --path pgha-e2e/7/uid",
                "OUTPUT -m cgroup --path pgha-e2e/7/uid",
            ]
        );
        let pod = PodRef {
            namespace: "ns".into(),
            name: "db-1".into(),
        };
        assert_eq!(tag(7, &pod), "pgha-e2e:7:ns/db-1");
        let api: Vec<String> = net.api_rules().iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            api,
            [
                "OUTPUT -m cgroup --path pgha-e2e/7/uid -p tcp -d 127.247.0.1 --dport 443",
                "INPUT -m cgroup --path pgha-e2e/7/uid -p tcp -s 127.247.0.1 --sport 443",
            ]
        );
    }
}
