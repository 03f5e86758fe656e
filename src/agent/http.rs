//! The agent's HTTP endpoint: `/status` (JSON), `/metrics` (Prometheus),
//! `/healthz` and `/readyz`. Orders come from the Kubernetes API, never from this port; the one
//! thing a request here can change is `/peer/vouch`, a signed request of the primary this
//! member follows for a promise not to be promoted for a while (`agent::peers`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

use super::Agent;
use super::peers::{VouchAnswer, VouchRequest};
use super::status::Status;
use crate::plan::vouch::PeerReport;

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/peer", get(peer))
        .route("/peer/vouch", post(vouch))
        .with_state(agent)
}

/// Serves until the listener fails.
pub async fn serve(agent: Arc<Agent>, listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(agent)).await
}

async fn status(State(agent): State<Arc<Agent>>) -> Json<Status> {
    Json(agent.status().await)
}

async fn peer(State(agent): State<Arc<Agent>>) -> Json<PeerReport> {
    Json(agent.peers().report(&agent))
}

async fn vouch(
    State(agent): State<Arc<Agent>>,
    Json(request): Json<VouchRequest>,
) -> Json<VouchAnswer> {
    Json(agent.peers().vouch(&request))
}

async fn metrics(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        agent.metrics().await,
    )
}

async fn ready(State(agent): State<Arc<Agent>>) -> (StatusCode, &'static str) {
    if agent.status().await.ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
