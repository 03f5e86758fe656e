//! The operator's port: `/healthz` (the process runs), `/readyz` (it leads and its
//! controllers run) and `/metrics` (Prometheus text).

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
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
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
            get(|State(h): State<Arc<Health>>| async move { h.metrics.render() }),
        )
        .with_state(health);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the health port stopped");
    }
}
