//! `coordination.k8s.io` Leases: the operator's leader Lease and each cluster's primary Lease.
//! Every write carries the resourceVersion it read, so two writers cannot both win.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::plan::lease::expired;

/// Who may take a Lease that someone else holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// Anyone, once it has expired (leader election).
    WhenExpired,
    /// Nobody: only the operator assigns the primary Lease; an agent only renews it.
    Never,
}

/// One Lease by name.
pub struct LeaseApi {
    api: Api<Lease>,
    name: String,
    /// The Lease as this writer last wrote it: the next renewal is written over it without a
    /// read first, and the API refuses it (409) if anyone changed the Lease in between.
    written: Mutex<Option<Lease>>,
}

/// What a renewal writes besides the holder and the time.
#[derive(Clone, Debug, Default)]
pub struct Renewal {
    pub duration_seconds: i32,
    /// Replaces the Lease's annotations (the primary's WAL position rides along).
    pub annotations: Option<BTreeMap<String, String>>,
}

impl LeaseApi {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            written: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn get(&self) -> kube::Result<Option<Lease>> {
        self.api.get_opt(&self.name).await
    }

    /// Renews the Lease for `identity`, or takes it as `takeover` allows; false when
    /// someone else holds it (or wrote first). A missing Lease is created only for
    /// [`Takeover::WhenExpired`].
    pub async fn renew(
        &self,
        identity: &str,
        renewal: &Renewal,
        takeover: Takeover,
    ) -> kube::Result<bool> {
        let now = Timestamp::now();
        let written = self.written.lock().unwrap().clone();
        let held = written.filter(|l| {
            l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(identity)
        });
        if let Some(held) = held
            && self.write(renewed(&held, identity, renewal, now)).await?
        {
            return Ok(true);
        }
        let Some(current) = self.get().await? else {
            if takeover == Takeover::Never {
                return Ok(false);
            }
            return self
                .create(identity, renewal.duration_seconds, None, BTreeMap::new())
                .await;
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        let free = holder.is_none()
            || expired(
                spec.renew_time.as_ref().map(|t| t.0),
                spec.lease_duration_seconds
                    .unwrap_or(renewal.duration_seconds),
                now,
            );
        let mine = holder == Some(identity);
        if !mine && (takeover == Takeover::Never || !free) {
            return Ok(false);
        }
        self.write(renewed(&current, identity, renewal, now)).await
    }

    /// Creates the Lease held by `holder` (renewed now); false when it exists already.
    pub async fn create(
        &self,
        holder: &str,
        duration_seconds: i32,
        owner: Option<OwnerReference>,
        labels: BTreeMap<String, String>,
    ) -> kube::Result<bool> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                owner_references: owner.map(|o| vec![o]),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(held_by(holder, None, duration_seconds, Timestamp::now())),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease as read in `current` to `to`, renewed now, without the annotation
    /// `unmark`; false when it changed since it was read (its holder renewed, or another
    /// writer came first).
    pub async fn hand_over(
        &self,
        current: &Lease,
        to: &str,
        duration_seconds: i32,
        unmark: &str,
    ) -> kube::Result<bool> {
        let spec = current.spec.as_ref();
        let mut metadata = current.metadata.clone();
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.remove(unmark);
        }
        self.write(Lease {
            metadata,
            spec: Some(held_by(to, spec, duration_seconds, Timestamp::now())),
        })
        .await
    }

    /// Leaves the Lease without holder if `identity` holds it: the next one may take it at
    /// once instead of waiting for it to run out.
    pub async fn release(&self, identity: &str) -> kube::Result<bool> {
        let Some(current) = self.get().await? else {
            return Ok(false);
        };
        let mut spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(identity) {
            return Ok(false);
        }
        spec.holder_identity = None;
        self.write(Lease {
            metadata: current.metadata.clone(),
            spec: Some(spec),
        })
        .await
    }

    /// Replaces the Lease if it is still at `lease`'s resourceVersion; false when it is not.
    async fn write(&self, lease: Lease) -> kube::Result<bool> {
        let outcome = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
        let mut written = self.written.lock().unwrap();
        *written = None;
        match outcome {
            Ok(stored) => {
                *written = Some(stored);
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `current` renewed by `identity` at `now`, with the renewal's annotations if it has any.
fn renewed(current: &Lease, identity: &str, renewal: &Renewal, now: Timestamp) -> Lease {
    let mut metadata = current.metadata.clone();
    if renewal.annotations.is_some() {
        metadata.annotations = renewal.annotations.clone();
    }
    Lease {
        metadata,
        spec: Some(held_by(
            identity,
            current.spec.as_ref(),
            renewal.duration_seconds,
            now,
        )),
    }
}

/// The spec of a Lease held by `identity` and renewed at `now`, counting a change of holder.
fn held_by(
    identity: &str,
    previous: Option<&LeaseSpec>,
    duration_seconds: i32,
    now: Timestamp,
) -> LeaseSpec {
    let same = previous.and_then(|p| p.holder_identity.as_deref()) == Some(identity);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time: if same {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if same { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}
