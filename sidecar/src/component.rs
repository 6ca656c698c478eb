//! Components: the sidecar's jobs (backups today; log shipping and metric
//! aggregation later) and the supervisor that runs them side by side.
//!
//! Each component is a task with its own config section, metrics and health.
//! The supervisor runs each in its own Tokio task and restarts it with a
//! backoff when it fails or panics, so one failing job never stops the others
//! nor the admin listener.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::watch;

/// Resolves once shutdown has been asked for (SIGTERM).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown signal and the sender that triggers it.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (sender, Shutdown(receiver))
    }

    /// Whether shutdown has been asked for.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until shutdown is asked for (or the sender is gone).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A job of the sidecar.
pub trait Component: Send + Sync + 'static {
    /// Short name, used in logs and in the readiness body (`backup`).
    fn name(&self) -> &'static str;

    /// Runs until `shutdown` resolves. An error (or a panic) makes the
    /// supervisor mark the component failed and restart it after a backoff.
    fn run(
        self: Arc<Self>,
        health: HealthHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// What a component says about itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ComponentHealth {
    /// Started, not yet reporting.
    Starting,
    /// Working.
    Ok,
    /// Running, but its last piece of work failed (the message says why).
    Degraded { message: String },
    /// Stopped with an error or a panic; the supervisor restarts it.
    Failed { message: String },
    /// Stopped on shutdown.
    Stopped,
}

/// The health of every component, shown by `/health/ready`.
#[derive(Clone, Default)]
pub struct HealthRegistry(Arc<Mutex<BTreeMap<&'static str, ComponentHealth>>>);

impl HealthRegistry {
    /// A snapshot of every component's health.
    pub fn snapshot(&self) -> BTreeMap<&'static str, ComponentHealth> {
        self.0.lock().expect("never poisoned").clone()
    }

    /// The handle a component reports through.
    pub fn handle(&self, name: &'static str) -> HealthHandle {
        let handle = HealthHandle {
            name,
            registry: self.clone(),
        };
        handle.set(ComponentHealth::Starting);
        handle
    }
}

/// One component's way to report its health.
#[derive(Clone)]
pub struct HealthHandle {
    name: &'static str,
    registry: HealthRegistry,
}

impl HealthHandle {
    /// Records the component's current health.
    pub fn set(&self, health: ComponentHealth) {
        self.registry
            .0
            .lock()
            .expect("never poisoned")
            .insert(self.name, health);
    }
}

/// First restart delay after a failure; doubled up to [`MAX_RESTART_DELAY`].
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// Runs `component` until shutdown, restarting it when it fails or panics.
pub async fn supervise(
    component: Arc<dyn Component>,
    health: HealthRegistry,
    mut shutdown: Shutdown,
) {
    let name = component.name();
    let handle = health.handle(name);
    let mut delay = FIRST_RESTART_DELAY;
    loop {
        // A task of its own, so that a panic is caught here as a JoinError
        // instead of unwinding through the supervisor.
        let task = tokio::spawn(component.clone().run(handle.clone(), shutdown.clone()));
        let message = match task.await {
            Ok(Ok(())) => {
                handle.set(ComponentHealth::Stopped);
                tracing::info!(component = name, "component stopped");
                return;
            }
            Ok(Err(error)) => format!("{error:#}"),
            Err(join_error) => format!("panicked: {join_error}"),
        };
        tracing::error!(component = name, error = %message, "component failed; restarting it");
        handle.set(ComponentHealth::Failed { message });
        tokio::select! {
            _ = shutdown.requested() => {
                handle.set(ComponentHealth::Stopped);
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Flaky {
        runs: AtomicUsize,
    }

    impl Component for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn run(
            self: Arc<Self>,
            health: HealthHandle,
            mut shutdown: Shutdown,
        ) -> BoxFuture<'static, anyhow::Result<()>> {
            Box::pin(async move {
                if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run panics");
                }
                health.set(ComponentHealth::Ok);
                shutdown.requested().await;
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn a_panicking_component_is_restarted_and_stops_on_shutdown() {
        let (stop, shutdown) = Shutdown::new();
        let health = HealthRegistry::default();
        let component = Arc::new(Flaky {
            runs: AtomicUsize::new(0),
        });
        let supervisor = tokio::spawn(supervise(component.clone(), health.clone(), shutdown));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while health.snapshot().get("flaky") != Some(&ComponentHealth::Ok) {
            assert!(tokio::time::Instant::now() < deadline, "never restarted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).expect("supervisor listens");
        tokio::time::timeout(Duration::from_secs(10), supervisor)
            .await
            .expect("stops on shutdown")
            .expect("no panic escapes");
        assert_eq!(component.runs.load(Ordering::SeqCst), 2);
        assert_eq!(
            health.snapshot().get("flaky"),
            Some(&ComponentHealth::Stopped)
        );
    }
}
