//! The operator's port: `/healthz` (the process runs), `/readyz` (it reaches the API server
//! and either leads or stands by — a standby must be ready too, or a two-replica Deployment
//! never finishes a rollout) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::context::Metrics;

#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    pub metrics: Arc<Metrics>,
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn set_leading(&self) {
        self.metrics.set_leading();
    }

    fn metrics_text(&self) -> String {
        self.metrics.render()
    }
}

pub async fn serve(health: Arc<Health>, listener: tokio::net::TcpListener) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "leading")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for the leader Lease",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(h): State<Arc<Health>>| async move { h.metrics_text() }),
        )
        .with_state(health);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the health port stopped");
    }
}
