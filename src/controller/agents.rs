//! The agents' own reports, read from their read-only `/status` port. PgInstance status says
//! what each agent last wrote; this is what every agent says now, read at one moment, so that
//! the lag of each replica is measured against the primary's WAL position of that moment.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::plan::agent::Endpoint;
use crate::plan::status::Detail;
use crate::plan::vouch::PromiseReport;

/// The part of an agent's `/status` the operator uses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    #[serde(default)]
    current_lsn: Option<String>,
    #[serde(default)]
    replayed_lsn: Option<String>,
    #[serde(default)]
    received_lsn: Option<String>,
    #[serde(default)]
    in_recovery: bool,
    #[serde(default)]
    timeline: Option<i64>,
    #[serde(default)]
    system_identifier: Option<String>,
    #[serde(default)]
    upstream: Option<Upstream>,
    #[serde(default)]
    streamed_from: Option<String>,
    #[serde(default)]
    promises: Vec<PromiseReport>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Upstream {
    #[serde(default)]
    received_timeline: Option<i64>,
}

/// An agent's report, or None when it does not answer within a second.
pub async fn detail(agent: &Endpoint) -> Option<Detail> {
    let report: Report = get_json(&agent.host, "/status").await?;
    // A replica's WAL may be on a newer timeline than the one it replays.
    let received_timeline = report.upstream.and_then(|u| u.received_timeline);
    Some(Detail {
        current_lsn: report.current_lsn,
        replayed_lsn: report.replayed_lsn,
        received_lsn: report.received_lsn,
        in_recovery: report.in_recovery,
        timeline: received_timeline.or(report.timeline),
        system_identifier: report.system_identifier,
        streamed_from: report.streamed_from,
        promises: report.promises,
    })
}

/// `GET path` on a pod's status port, as JSON; None when it does not answer within a second.
pub async fn get_json<T: DeserializeOwned>(host: &str, path: &str) -> Option<T> {
    crate::pod_http::get_json(host, path, Duration::from_secs(1)).await
}
