//! The admin listener: `/health/live`, `/health/ready` and `/metrics`.
//!
//! Readiness is 200 while the process runs and 503 once shutdown starts. A
//! failing component does not turn it to 503: the sidecar shares its pod with
//! todo-app, and an unready sidecar would take the API out of the Service for
//! a backup problem. Component health is in the body, and in the metrics.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::Server;
use actix_web::web::Data;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use serde_json::json;

use crate::aggregate::Aggregator;
use crate::component::HealthRegistry;
use crate::metrics::Metrics;

/// State shared by the admin handlers.
pub struct AdminState {
    /// Every component's health.
    pub health: HealthRegistry,
    /// The registry rendered by `/metrics`.
    pub metrics: Metrics,
    /// Set when shutdown starts.
    pub shutting_down: Arc<AtomicBool>,
    /// With aggregation on, `/metrics` serves the app's metrics too.
    pub aggregator: Option<Arc<Aggregator>>,
}

/// Binds the admin listener (port 0 picks a free one) and builds its server.
pub fn build(host: &str, port: u16, state: AdminState) -> anyhow::Result<(Server, u16)> {
    let listener = TcpListener::bind((host, port))
        .with_context(|| format!("Failed to bind the admin listener to {host}:{port}"))?;
    let port = listener.local_addr()?.port();
    let state = Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
            .route("/metrics", web::get().to(metrics))
    })
    // Probes and scrapes only: one worker is plenty.
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)
    .context("Failed to start the admin listener")?
    .run();
    Ok((server, port))
}

/// `GET /health/live`: the process is up and serving HTTP.
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /health/ready`: 200 until shutdown starts, with each component's health.
async fn ready(state: Data<AdminState>) -> HttpResponse {
    let components = state.health.snapshot();
    if state.shutting_down.load(Ordering::SeqCst) {
        HttpResponse::ServiceUnavailable()
            .json(json!({"status": "shutting_down", "components": components}))
    } else {
        HttpResponse::Ok().json(json!({"status": "ok", "components": components}))
    }
}

/// `GET /metrics`: the Prometheus text exposition (with the app's
/// aggregated metrics and the database gauges when aggregation is on).
async fn metrics(state: Data<AdminState>) -> HttpResponse {
    let body = match &state.aggregator {
        Some(aggregator) => aggregator.render().await,
        None => state.metrics.render(),
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
