//! The admin listener's handlers: liveness, readiness and `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::web::Data;
use actix_web::{HttpResponse, web};
use diesel::connection::SimpleConnection;
use serde_json::json;

use crate::actors::db::DbClient;
use crate::db::PgPool;
use crate::metrics::Metrics;

/// A readiness probe answers within this time, whatever the database does.
const READINESS_BUDGET: Duration = Duration::from_millis(900);
/// Probes closer together than this reuse the last answer, so a burst of
/// probes (several kubelets, a load balancer) costs one database round trip.
const READINESS_CACHE: Duration = Duration::from_millis(500);

/// What readiness depends on: not shutting down, and the database answering.
pub struct Readiness {
    shutting_down: AtomicBool,
    /// A pool of one connection of its own, so probes never queue behind requests.
    pool: PgPool,
    last_check: Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    pub fn new(pool: PgPool) -> Readiness {
        Readiness {
            shutting_down: AtomicBool::new(false),
            pool,
            last_check: Mutex::new(None),
        }
    }

    /// Turns readiness to 503 for good: the first step of a graceful shutdown.
    pub fn start_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    async fn database_reachable(&self) -> bool {
        if let Some((at, reachable)) = *self.last_check.lock().expect("never poisoned")
            && at.elapsed() < READINESS_CACHE
        {
            return reachable;
        }
        let pool = self.pool.clone();
        let probe = web::block(move || -> bool {
            match pool.get_within(READINESS_BUDGET) {
                Ok(mut conn) => {
                    let ok = conn.connection.batch_execute("SELECT 1").is_ok();
                    if !ok {
                        conn.mark_lost();
                    }
                    ok
                }
                Err(_) => false,
            }
        });
        let reachable = matches!(
            tokio::time::timeout(READINESS_BUDGET, probe).await,
            Ok(Ok(true))
        );
        *self.last_check.lock().expect("never poisoned") = Some((Instant::now(), reachable));
        reachable
    }
}

/// `GET /health/live`: the process is up and serving HTTP.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /health/ready`: 200 when the database answers and no shutdown has
/// started; otherwise 503 within a second.
pub async fn ready(readiness: Data<Readiness>) -> HttpResponse {
    if readiness.is_shutting_down() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "shutting_down"}));
    }
    if readiness.database_reachable().await {
        HttpResponse::Ok().json(json!({"status": "ok"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "database_unavailable"}))
    }
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(metrics: Data<Metrics>, db: Data<DbClient>) -> HttpResponse {
    db.observe_connections();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}
