//! `todo-sidecar run` from start to stop: [`Application::build`] creates the
//! metrics, the enabled components and the admin listener;
//! [`Application::run_until_stopped`] supervises the components until SIGTERM
//! or SIGINT, then stops them, then the listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use anyhow::Context;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::aggregate::{AggregateComponent, Aggregator};
use crate::backup::BackupComponent;
use crate::cli::stop_signals;
use crate::component::{Component, HealthRegistry, Shutdown, supervise};
use crate::configuration::Settings;
use crate::logship::LogshipComponent;
use crate::metrics::Metrics;

/// The sidecar, built and not yet running.
pub struct Application {
    settings: Settings,
    health: HealthRegistry,
    components: Vec<Arc<dyn Component>>,
    /// Set when shutdown starts: readiness answers 503 from then on.
    shutting_down: Arc<AtomicBool>,
    admin: Server,
    admin_port: u16,
}

/// The enabled components, and the aggregator the admin listener's
/// `/metrics` shares with the `aggregate` component.
struct Components {
    all: Vec<Arc<dyn Component>>,
    aggregator: Option<Arc<Aggregator>>,
}

impl Application {
    /// Builds every enabled component and binds the admin listener (port 0
    /// picks a free one). Call it inside the sidecar's Tokio runtime.
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let metrics = Metrics::new();
        let health = HealthRegistry::default();
        let shutting_down = Arc::new(AtomicBool::new(false));
        let components = build_components(&settings, &metrics)?;
        let (admin, admin_port) = admin::build(
            &settings.admin.host,
            settings.admin.port,
            AdminState {
                health: health.clone(),
                metrics,
                shutting_down: shutting_down.clone(),
                aggregator: components.aggregator,
            },
        )?;
        Ok(Application {
            settings,
            health,
            components: components.all,
            shutting_down,
            admin,
            admin_port,
        })
    }

    /// The port the admin listener is bound to.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Serves the admin listener and supervises the components until a stop
    /// signal, then stops the components (within their time) and the listener.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let server_handle = self.admin.handle();
        let server_task = tokio::spawn(self.admin);
        let (stop, shutdown) = Shutdown::new();
        let supervisors = supervise_all(self.components, &self.health, &shutdown);
        tracing::info!(admin_port = self.admin_port, "todo-sidecar started");

        let signal = stop_signals()
            .context("Failed to listen for stop signals")?
            .await;
        tracing::info!(signal, "stop signal received; shutting down");
        self.shutting_down.store(true, Ordering::SeqCst);
        let _ = stop.send(true);
        wait_for_components(supervisors, shutdown_wait(&self.settings)).await;
        server_handle.stop(true).await;
        let _ = server_task.await;
        tracing::info!("todo-sidecar stopped");
        Ok(())
    }
}

/// The components the settings enable, in a fixed order.
fn build_components(settings: &Settings, metrics: &Metrics) -> anyhow::Result<Components> {
    let mut all: Vec<Arc<dyn Component>> = Vec::new();
    if settings.backup.enabled {
        all.push(Arc::new(BackupComponent::new(
            settings.clone(),
            metrics.backup.clone(),
        )?));
    }
    if settings.logship.enabled() {
        all.push(Arc::new(LogshipComponent::new(
            settings.logship.clone(),
            metrics.logship.clone(),
        )));
    }
    let aggregator = if settings.aggregate.enabled {
        let aggregator = Aggregator::new(settings, metrics.clone())?;
        all.push(Arc::new(AggregateComponent::new(aggregator.clone())));
        Some(aggregator)
    } else {
        None
    };
    Ok(Components { all, aggregator })
}

/// Starts one supervisor per component.
fn supervise_all(
    components: Vec<Arc<dyn Component>>,
    health: &HealthRegistry,
    shutdown: &Shutdown,
) -> Vec<JoinHandle<()>> {
    components
        .into_iter()
        .map(|component| tokio::spawn(supervise(component, health.clone(), shutdown.clone())))
        .collect()
}

/// How long the components get to stop: `admin.shutdown_timeout_seconds`,
/// or longer when log shipping's own drain needs it (the wait must not cut
/// the drain short).
fn shutdown_wait(settings: &Settings) -> Duration {
    if settings.logship.enabled() {
        settings
            .admin
            .shutdown_timeout()
            .max(settings.logship.drain_timeout() + Duration::from_secs(2))
    } else {
        settings.admin.shutdown_timeout()
    }
}

/// Waits for every supervisor to return, at most `wait`.
async fn wait_for_components(supervisors: Vec<JoinHandle<()>>, wait: Duration) {
    let all_stopped = futures_util::future::join_all(supervisors);
    if tokio::time::timeout(wait, all_stopped).await.is_err() {
        tracing::warn!("components did not stop in time; exiting anyway");
    }
}
