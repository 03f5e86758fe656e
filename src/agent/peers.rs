//! The members of a cluster vouching for their primary over the pod network, so that the
//! primary need not stop when the Kubernetes API does not answer (`plan::vouch` decides;
//! docs/failover.md, "When the Kubernetes API is away", has the argument).
//!
//! On the status port: `POST /peer/vouch` asks a member to promise the primary not to be
//! promoted for the Lease time; `GET /peer` says what a member stands for, to a replica about
//! to be promoted. A vouch only ever makes a member more careful, and it must carry a MAC
//! made with the cluster's replication password, so that nobody else can hold up a failover.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::Agent;
use crate::api::instance::OrderedRole;
use crate::plan::agent::Orders;
use crate::plan::vouch::{self, PeerReport, PromiseReport, Promises, Stance};

/// How far a vouch request's wall-clock time may be from this member's: a copied request
/// is no use later than that.
const FRESH_WITHIN: Duration = Duration::from_secs(10);

/// How long a member waits for another's `/peer` answer before a promotion.
const ASK_WITHIN: Duration = Duration::from_secs(1);

/// The orders of this member as they are now (the watch's latest, not the loop's last read).
pub type OrdersNow = Box<dyn Fn() -> Option<Orders> + Send + Sync>;

/// A primary's request for a promise.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VouchRequest {
    pub cluster: String,
    /// The primary's address, as the members' orders name it.
    pub primary: String,
    /// Its wall-clock time, in milliseconds since the Unix epoch.
    pub sent_at_millis: i64,
    /// HMAC-SHA256 of the fields above (hex), keyed with the replication password.
    pub mac: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VouchAnswer {
    pub granted: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a member promised and how it takes part; empty until [`Peers::attach`].
#[derive(Default)]
pub struct Peers {
    promises: Mutex<Promises>,
    link: OnceLock<Link>,
}

struct Link {
    orders: OrdersNow,
    cluster: String,
    key: hmac::Key,
    /// This member's own address.
    host: String,
}

/// The outcome of one round of vouches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    pub sent: Instant,
    pub granted: usize,
    pub members: usize,
}

fn mac_input(cluster: &str, primary: &str, sent_at_millis: i64) -> String {
    format!("pgha-vouch\n{cluster}\n{primary}\n{sent_at_millis}")
}

fn refused(reason: impl Into<String>) -> VouchAnswer {
    VouchAnswer {
        granted: false,
        reason: Some(reason.into()),
    }
}

fn stance(orders: &Orders) -> Stance<'_> {
    Stance {
        ordered_primary: orders.role == OrderedRole::Primary,
        follows: orders.primary.as_ref().map(|e| e.host.as_str()),
    }
}

/// The members of the cluster but `me`, with the addresses the orders give.
fn others<'a>(orders: &'a Orders, me: &'a str) -> impl Iterator<Item = &'a str> {
    orders
        .peers
        .iter()
        .map(|p| p.host.as_str())
        .filter(move |h| *h != me)
}

fn members(orders: &Orders) -> usize {
    orders.config.members.len() + 1
}

impl Peers {
    /// Takes part in vouching: `orders` reads this member's orders, `host` is its address,
    /// `secret` the cluster's replication password.
    pub fn attach(&self, orders: OrdersNow, cluster: &str, host: &str, secret: &str) {
        let link = Link {
            orders,
            cluster: cluster.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            host: host.to_string(),
        };
        let _ = self.link.set(link);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Promises> {
        self.promises.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The promises running now (for `/status`, which the operator reads).
    pub fn running(&self) -> Vec<PromiseReport> {
        self.lock().running(Instant::now())
    }

    /// `POST /peer/vouch`: promises the primary that asks, if this member's orders follow it.
    pub fn vouch(&self, request: &VouchRequest) -> VouchAnswer {
        let Some(link) = self.link.get() else {
            return refused("this agent takes no part in vouching");
        };
        if request.cluster != link.cluster {
            return refused(format!("this member is of cluster {}", link.cluster));
        }
        let signed = mac_input(&request.cluster, &request.primary, request.sent_at_millis);
        let mac = hex::decode(&request.mac).unwrap_or_default();
        if hmac::verify(&link.key, signed.as_bytes(), &mac).is_err() {
            return refused("the request's MAC is wrong");
        }
        let age = (chrono::Utc::now().timestamp_millis() - request.sent_at_millis).unsigned_abs();
        if age > FRESH_WITHIN.as_millis() as u64 {
            return refused(format!(
                "the request is {age} ms away from this member's clock"
            ));
        }
        let Some(orders) = (link.orders)() else {
            return refused("this member has no orders");
        };
        if !vouch::vouches_for(&stance(&orders), &request.primary) {
            return refused("this member's orders do not follow that primary");
        }
        let Some(lease) = &orders.lease else {
            return refused("this member's orders name no primary Lease");
        };
        let lasting = Duration::from_secs(u64::try_from(lease.duration_seconds).unwrap_or(0));
        self.lock().make(&request.primary, Instant::now(), lasting);
        VouchAnswer {
            granted: true,
            reason: None,
        }
    }

    /// `GET /peer`: what this member stands for.
    pub fn report(&self, agent: &Agent) -> PeerReport {
        let orders = self.link.get().and_then(|l| (l.orders)());
        PeerReport {
            serving_primary: agent.runs_as_primary(),
            ordered_primary: orders
                .as_ref()
                .is_some_and(|o| o.role == OrderedRole::Primary),
            follows: orders.and_then(|o| o.primary.map(|p| p.host)),
            promises: self.running(),
        }
    }

    /// One round of vouches from this member as primary, each member waited for up to
    /// `within`; None when it takes no part.
    pub async fn round(&self, within: Duration) -> Option<Round> {
        let link = self.link.get()?;
        let orders = (link.orders)()?;
        let sent_at_millis = chrono::Utc::now().timestamp_millis();
        let signed = mac_input(&link.cluster, &link.host, sent_at_millis);
        let request = VouchRequest {
            cluster: link.cluster.clone(),
            primary: link.host.clone(),
            sent_at_millis,
            mac: hex::encode(hmac::sign(&link.key, signed.as_bytes()).as_ref()),
        };
        let sent = Instant::now();
        let asks = others(&orders, &link.host).map(|host| {
            crate::pod_http::post_json::<_, VouchAnswer>(host, "/peer/vouch", &request, within)
        });
        let answers = futures::future::join_all(asks).await;
        let granted = answers.iter().flatten().filter(|a| a.granted).count();
        Some(Round {
            sent,
            granted,
            members: members(&orders),
        })
    }

    /// Before this member is promoted: whether no other instance can count on a majority's
    /// promises (`plan::vouch::may_take_over`), and none it made itself still runs.
    pub async fn may_take_over(&self) -> Result<(), String> {
        let Some(link) = self.link.get() else {
            return Ok(());
        };
        let orders = (link.orders)().ok_or("this member has no orders")?;
        let now = Instant::now();
        if let Some(until) = self.lock().to_others_until(&link.host, now) {
            return Err(format!(
                "this member promised another primary not to be promoted for {} ms more",
                (until - now).as_millis()
            ));
        }
        let asks = others(&orders, &link.host)
            .map(|host| crate::pod_http::get_json::<PeerReport>(host, "/peer", ASK_WITHIN));
        let answers: Vec<PeerReport> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        vouch::may_take_over(&link.host, members(&orders), &answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::instance::{Endpoint, Peer, PrimaryLease};

    fn orders(follows: &str) -> Orders {
        let mut orders: Orders =
            serde_json::from_value(serde_json::json!({"role": "replica"})).unwrap();
        orders.primary = Some(Endpoint {
            host: follows.into(),
            port: 5432,
        });
        orders.lease = Some(PrimaryLease {
            name: "orders-primary".into(),
            duration_seconds: 3,
            renew_millis: 500,
            fence_margin_millis: 1000,
        });
        orders.peers = vec![Peer {
            name: "orders-1".into(),
            host: "127.1.0.2".into(),
        }];
        orders
    }

    fn request(secret: &str, primary: &str, at: i64) -> VouchRequest {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let mac = hmac::sign(&key, mac_input("orders", primary, at).as_bytes());
        VouchRequest {
            cluster: "orders".into(),
            primary: primary.into(),
            sent_at_millis: at,
            mac: hex::encode(mac.as_ref()),
        }
    }

    #[test]
    fn a_member_promises_only_a_signed_fresh_request_of_the_primary_it_follows() {
        let peers = Peers::default();
        let now = chrono::Utc::now().timestamp_millis();
        assert!(!peers.vouch(&request("s", "127.1.0.2", now)).granted);
        peers.attach(
            Box::new(|| Some(orders("127.1.0.2"))),
            "orders",
            "127.2.0.2",
            "s",
        );
        let wrong_key = peers.vouch(&request("other", "127.1.0.2", now));
        assert_eq!(
            wrong_key.reason.as_deref(),
            Some("the request's MAC is wrong")
        );
        assert!(
            !peers
                .vouch(&request("s", "127.1.0.2", now - 60_000))
                .granted
        );
        assert!(!peers.vouch(&request("s", "127.3.0.2", now)).granted);
        assert!(peers.running().is_empty());
        assert!(peers.vouch(&request("s", "127.1.0.2", now)).granted);
        let running = peers.running();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].primary, "127.1.0.2");
        assert!(running[0].remaining_millis > 2_900);
    }
}
