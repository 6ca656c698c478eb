//! Builds the application from [`Settings`]: migrations, the database client,
//! both listeners; and runs it until a graceful shutdown. `main` and the
//! tests start the application the same way.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::actors::db::{DbClient, WorkersAlive};
use crate::auth::Authenticator;
use crate::configuration::{Settings, TlsSettings};
use crate::db::{self, migrations};
use crate::metrics::Metrics;
use crate::middleware::{close_on_unread_body, normalize_path, request_span};
use crate::routes::body::BodyLimits;
use crate::routes::health::Readiness;
use crate::routes::{self, configure_admin, configure_api};
use crate::tls::{self, ReloadingCertificate};

/// Longest wait for the database workers to end after the servers stopped.
const WORKERS_EXIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// A built application, listening, not yet running.
pub struct Application {
    api_port: u16,
    admin_port: u16,
    api_server: Server,
    admin_server: Server,
    shutdown: ShutdownHandle,
    workers_alive: WorkersAlive,
}

/// Stops the application gracefully; cheap to clone.
#[derive(Clone)]
pub struct ShutdownHandle {
    readiness: web::Data<Readiness>,
    api: ServerHandle,
    admin: ServerHandle,
    readiness_delay: std::time::Duration,
}

impl ShutdownHandle {
    /// Readiness turns 503, then (after `server.shutdown_readiness_delay_seconds`,
    /// so load balancers stop routing here) the API listener closes and
    /// in-flight requests get `server.shutdown_timeout_seconds` to finish;
    /// the admin listener closes last.
    pub async fn shutdown(&self) {
        tracing::info!("shutdown started: readiness now reports 503");
        self.readiness.start_shutdown();
        tokio::time::sleep(self.readiness_delay).await;
        self.api.stop(true).await;
        self.admin.stop(true).await;
    }
}

impl Application {
    /// Runs migrations (when `database.migrate_on_start`), starts the
    /// executors and binds both listeners. Fails with a message when the
    /// database cannot be migrated, a port is taken, or TLS files are unusable.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // Unusable TLS files are found before anything touches the database.
        let certificate = match &settings.tls {
            TlsSettings {
                cert_path: Some(_),
                key_path: Some(_),
                ..
            } => Some(ReloadingCertificate::load(&settings.tls)?),
            _ => None,
        };

        if settings.database.migrate_on_start {
            let database = settings.database.clone();
            let applied = web::block(move || -> anyhow::Result<Vec<String>> {
                let mut connection = db::connect(&database)
                    .context("Failed to connect to the database to run migrations")?;
                migrations::run_pending_migrations(&mut connection, database.migration_lock_wait())
            })
            .await
            .context("The migration thread failed")??;
            if !applied.is_empty() {
                tracing::info!(migrations = ?applied, "applied database migrations");
            }
        }

        let metrics = Metrics::new();
        let connector = db::connect::AsyncConnector::new(
            &settings.database.connection_url(),
            &db::request_session_options(&settings.database),
        )
        .context("Invalid database.url")?;
        let db_client = DbClient::new(&settings.database, connector, metrics.clone());
        let workers_alive = db_client.workers_alive();
        let authenticator = web::Data::new(Authenticator::new(
            &settings.auth,
            db_client.clone(),
            metrics.clone(),
        ));
        let readiness = web::Data::new(Readiness::new(db::readiness_pool(&settings.database)));

        let api_listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!(
                    "Failed to bind the API listener to {}:{}",
                    settings.server.host, settings.server.port
                )
            })?;
        let api_port = api_listener.local_addr()?.port();
        let admin_listener = TcpListener::bind((settings.admin.host.as_str(), settings.admin.port))
            .with_context(|| {
                format!(
                    "Failed to bind the admin listener to {}:{}",
                    settings.admin.host, settings.admin.port
                )
            })?;
        let admin_port = admin_listener.local_addr()?.port();

        let body_limits = BodyLimits {
            max_bytes: settings.server.json_body_limit_bytes,
            timeout: settings.server.request_body_timeout(),
        };
        let db_data = web::Data::new(db_client);
        let admin_db = db_data.clone();
        let metrics = web::Data::new(metrics);
        let api = {
            let authenticator = authenticator.clone();
            let metrics = metrics.clone();
            HttpServer::new(move || {
                App::new()
                    .app_data(db_data.clone())
                    .app_data(metrics.clone())
                    .app_data(authenticator.clone())
                    .configure(|cfg| configure_api(cfg, body_limits))
                    .default_service(web::to(routes::not_found))
                    .wrap(from_fn(close_on_unread_body))
                    .wrap(from_fn(normalize_path))
                    .wrap(from_fn(request_span))
            })
        };
        let mut api = api
            .disable_signals()
            .shutdown_timeout(settings.server.shutdown_timeout_seconds)
            .client_request_timeout(settings.server.client_request_timeout())
            .keep_alive(settings.server.keep_alive());
        if settings.server.workers > 0 {
            api = api.workers(settings.server.workers);
        }
        let api_server = match &certificate {
            Some(certificate) => {
                if let Some(every) = settings.tls.reload_interval() {
                    actix_web::rt::spawn(tls::watch(
                        Arc::clone(certificate),
                        every,
                        metrics.get_ref().clone(),
                    ));
                }
                api.listen_rustls_0_23(api_listener, certificate.server_config()?)
                    .context("Failed to start the HTTPS listener")?
            }
            None => api
                .listen(api_listener)
                .context("Failed to start the HTTP listener")?,
        }
        .run();

        let admin_readiness = readiness.clone();
        let admin_server = HttpServer::new(move || {
            App::new()
                .app_data(admin_readiness.clone())
                .app_data(metrics.clone())
                .app_data(admin_db.clone())
                .configure(configure_admin)
                .default_service(web::to(routes::not_found))
        })
        .disable_signals()
        .workers(1)
        .shutdown_timeout(5)
        .listen(admin_listener)
        .context("Failed to start the admin listener")?
        .run();

        let shutdown = ShutdownHandle {
            readiness,
            api: api_server.handle(),
            admin: admin_server.handle(),
            readiness_delay: settings.server.shutdown_readiness_delay(),
        };
        tracing::info!(
            api_port,
            admin_port,
            tls = settings.tls.cert_path.is_some(),
            "todo-app listening"
        );
        Ok(Application {
            api_port,
            admin_port,
            api_server,
            admin_server,
            shutdown,
            workers_alive,
        })
    }

    /// The API port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.api_port
    }

    /// The admin port actually bound.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// A handle that stops the application gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until both listeners have stopped (see [`ShutdownHandle`]),
    /// then waits (at most 5 s) for the database workers to end, so the
    /// process never exits while one is still closing its connection.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (api, admin) = futures_util::future::join(self.api_server, self.admin_server).await;
        // The servers' app factories hold the client; drop ours first.
        if self
            .workers_alive
            .wait_for_exit(WORKERS_EXIT_DEADLINE)
            .await
        {
            tracing::info!("database workers stopped");
        } else {
            tracing::warn!("database workers still running at exit");
        }
        api.and(admin)
    }
}
