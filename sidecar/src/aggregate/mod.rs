//! Metric aggregation: the sidecar's `/metrics` as the pod's one metrics
//! endpoint. On a scrape (at most once per `aggregate.cache_ttl_ms`, however
//! many scrapers ask) the [`Aggregator`] fetches the app's exposition,
//! parses it, applies the rules and the cardinality guard, reads the
//! database gauges, and serves the result with the sidecar's own metrics.
//! The [`AggregateComponent`] reports its health and, when configured,
//! pushes the same series to a remote_write receiver.
//!
//! A pipeline in files: `scrape` (HTTP) → `parse` → `rules` (rules, guard)
//! → `exposition` (model, encoding); `pg` (database gauges); `remote_write`.

pub mod config;
pub mod events;
pub mod exposition;
pub mod parse;
pub mod pg;
pub mod remote_write;
pub mod rules;
pub mod scrape;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;

use crate::component::{Component, ComponentHealth, HealthHandle, Shutdown};
use crate::configuration::Settings;
use crate::metrics::{AggregateMetrics, Metrics};
use config::AggregateSettings;
use events::{AppScrapeFailed, PgGaugesUnreadable, RuleNotApplied, SeriesDropped};
use exposition::Family;
use parse::Format;
use pg::{PgProbe, PgStats};
use rules::RuleSet;

/// The result of one collection, shared by every scrape within the cache TTL.
#[derive(Debug)]
pub struct Snapshot {
    /// When it was taken (for the cache).
    pub taken: Instant,
    /// The same instant, in milliseconds since the epoch (for remote_write).
    pub timestamp_ms: i64,
    /// The app's families after the rules and the guard; empty when the app
    /// could not be scraped (a stale copy would look fresh to Prometheus).
    pub app: Vec<Family>,
    /// What went wrong, for logs and the component's health; empty when all is well.
    pub problems: Vec<String>,
}

/// Collects, caches and renders the pod's metrics.
pub struct Aggregator {
    settings: AggregateSettings,
    rules: Arc<RuleSet>,
    client: reqwest::Client,
    pg: Option<PgProbe>,
    metrics: Metrics,
    /// The runtime the collection runs on: the admin listener's handlers run
    /// on actix's own threads, and reqwest's connection pool and the
    /// blocking database thread belong with the sidecar's main runtime.
    runtime: tokio::runtime::Handle,
    cache: tokio::sync::Mutex<Option<Arc<Snapshot>>>,
    health: Mutex<Option<HealthHandle>>,
    /// The last remote_write failure, until a push succeeds: part of the
    /// component's health next to the collection's own problems.
    remote_write_problem: Mutex<Option<String>>,
}

impl Aggregator {
    /// Builds the aggregator; call it inside the sidecar's Tokio runtime.
    pub fn new(settings: &Settings, metrics: Metrics) -> anyhow::Result<Arc<Aggregator>> {
        let aggregate = settings.aggregate.clone();
        // Compiled once, when the settings loaded.
        let rules = Arc::new(aggregate.rules.clone());
        let client = crate::http::client_builder(crate::USER_AGENT, aggregate.scrape_timeout())
            .build()
            .map_err(|error| anyhow::anyhow!("Failed to build the HTTP client: {error}"))?;
        let pg = aggregate.database_gauges.then(|| {
            PgProbe::new(
                &settings.database.url,
                settings.database.connect_timeout(),
                Duration::from_millis(aggregate.database_statement_timeout_ms),
            )
        });
        Ok(Arc::new(Aggregator {
            settings: aggregate,
            rules,
            client,
            pg,
            metrics,
            runtime: tokio::runtime::Handle::current(),
            cache: tokio::sync::Mutex::new(None),
            health: Mutex::new(None),
            remote_write_problem: Mutex::new(None),
        }))
    }

    /// The current snapshot: the cached one while fresh, else a new
    /// collection (concurrent callers wait for the same one).
    pub async fn snapshot(self: &Arc<Self>) -> Arc<Snapshot> {
        let this = self.clone();
        let task = self.runtime.spawn(async move {
            let mut cache = this.cache.lock().await;
            if let Some(snapshot) = cache.as_ref()
                && snapshot.taken.elapsed() < this.settings.cache_ttl()
            {
                return snapshot.clone();
            }
            let fresh = Arc::new(this.collect().await);
            *cache = Some(fresh.clone());
            fresh
        });
        match task.await {
            Ok(snapshot) => snapshot,
            Err(error) => Arc::new(Snapshot {
                taken: Instant::now(),
                timestamp_ms: now_ms(),
                app: Vec::new(),
                problems: vec![format!("the collection failed: {error}")],
            }),
        }
    }

    /// Every family the sidecar exposes: the app's (aggregated) and its own.
    pub async fn families(self: &Arc<Self>) -> (Arc<Snapshot>, Vec<Family>) {
        let snapshot = self.snapshot().await;
        let families = self.merge(&snapshot);
        (snapshot, families)
    }

    /// The text exposition served on `/metrics`.
    pub async fn render(self: &Arc<Self>) -> String {
        let (_, families) = self.families().await;
        exposition::encode_to_string(&families)
    }

    /// The app's families followed by the sidecar's own. A name both expose
    /// (the `process_*` metrics) becomes one family whose series carry
    /// `source="app"` or `source="sidecar"`: two families of one name are
    /// invalid, and both processes' figures matter.
    fn merge(&self, snapshot: &Snapshot) -> Vec<Family> {
        let own = match parse::parse(&self.metrics.render(), Format::Text) {
            Ok(own) => own,
            Err(error) => {
                tracing::error!(error = %error, "the sidecar's own exposition does not parse; serving the app's only");
                return snapshot.app.clone();
            }
        };
        let own_by_name: HashMap<&str, &Family> = own
            .iter()
            .map(|family| (family.name.as_str(), family))
            .collect();
        let mut merged: Vec<Family> = Vec::with_capacity(snapshot.app.len() + own.len());
        let mut shared: HashMap<String, Family> = HashMap::new();
        for family in &snapshot.app {
            match own_by_name.get(family.name.as_str()) {
                None => merged.push(family.clone()),
                Some(mine) if mine.kind != family.kind => {
                    tracing::warn!(
                        metric = %family.name,
                        "the app and the sidecar both expose this metric with different types; serving the sidecar's"
                    );
                }
                Some(_) => {
                    shared.insert(family.name.clone(), with_source(family.clone(), "app"));
                }
            }
        }
        for family in own {
            match shared.remove(&family.name) {
                None => merged.push(family),
                Some(mut app) => {
                    app.samples.extend(with_source(family, "sidecar").samples);
                    merged.push(app);
                }
            }
        }
        merged
    }

    async fn collect(&self) -> Snapshot {
        let metrics = &self.metrics.aggregate;
        let (app, pg) = tokio::join!(self.scrape_app(), self.read_pg());
        let mut problems = Vec::new();
        let app = match app {
            Ok((families, skipped)) => {
                for reason in skipped {
                    RuleNotApplied { reason: &reason }.emit();
                }
                families
            }
            Err(error) => {
                let url = redacted(&self.settings.app_metrics_url);
                AppScrapeFailed {
                    error: &error,
                    url: &url,
                }
                .emit(metrics);
                problems.push(format!("cannot scrape the app at {url}: {error}"));
                Vec::new()
            }
        };
        metrics
            .app_up
            .with_label_values(&[] as &[&str])
            .set(i64::from(problems.is_empty()));
        if let Some(result) = pg {
            match result {
                Ok(stats) => record_pg(metrics, &stats),
                Err(error) => {
                    PgGaugesUnreadable { error: &error }.emit(metrics);
                    problems.push(format!("cannot read the database gauges: {error}"));
                }
            }
        }
        self.report_health(&problems);
        Snapshot {
            taken: Instant::now(),
            timestamp_ms: now_ms(),
            app,
            problems,
        }
    }

    /// Sets the component's health from the last collection's problems and
    /// the last remote_write failure.
    fn report_health(&self, problems: &[String]) {
        let Some(health) = self.health.lock().expect("never poisoned").clone() else {
            return;
        };
        let mut all = problems.to_vec();
        all.extend(
            self.remote_write_problem
                .lock()
                .expect("never poisoned")
                .clone(),
        );
        health.set(if all.is_empty() {
            ComponentHealth::Ok
        } else {
            ComponentHealth::Degraded {
                message: all.join("; "),
            }
        });
    }

    /// Records the outcome of a remote_write push for the component's health.
    fn remote_write_outcome(&self, problem: Option<String>) {
        *self.remote_write_problem.lock().expect("never poisoned") = problem;
    }

    /// Fetches, parses, aggregates and limits the app's exposition.
    async fn scrape_app(&self) -> Result<(Vec<Family>, Vec<String>), scrape::ScrapeError> {
        let metrics = &self.metrics.aggregate;
        let started = Instant::now();
        let outcome = async {
            let (body, format) = scrape::fetch(
                &self.client,
                &self.settings.app_metrics_url,
                self.settings.scrape_timeout(),
                self.settings.max_body_bytes,
            )
            .await?;
            // Parsing tens of thousands of series is CPU work: off the
            // async threads, so the admin listener stays responsive.
            let rules = self.rules.clone();
            let max_series = self.settings.max_series;
            let work = tokio::task::spawn_blocking(move || {
                let families = parse::parse(&body, format)?;
                let (mut families, outcome) = rules.apply(families);
                let dropped = rules::limit_series(&mut families, max_series);
                Ok::<_, parse::ParseError>((families, outcome.skipped, dropped))
            });
            let (families, skipped, dropped) = work.await.map_err(|error| {
                scrape::ScrapeError::Body(format!("the parser panicked: {error}"))
            })??;
            Ok((families, skipped, dropped))
        }
        .await;
        metrics
            .app_scrape_duration_seconds
            .with_label_values(&[] as &[&str])
            .set(started.elapsed().as_secs_f64());
        match outcome {
            Ok((families, skipped, dropped)) => {
                if dropped > 0 {
                    SeriesDropped {
                        dropped,
                        max_series: self.settings.max_series,
                    }
                    .emit(metrics);
                }
                metrics
                    .series
                    .set(exposition::series_count(&families) as i64);
                Ok((families, skipped))
            }
            Err(error) => {
                metrics.series.set(0);
                Err(error)
            }
        }
    }

    async fn read_pg(&self) -> Option<Result<PgStats, pg::PgError>> {
        let probe = self.pg.as_ref()?;
        Some(probe.read(self.settings.scrape_timeout()).await)
    }
}

fn with_source(mut family: Family, source: &str) -> Family {
    for sample in &mut family.samples {
        // One `source` per series, whatever the exposition already said.
        sample.labels.retain(|(name, _)| name != "source");
        sample
            .labels
            .push(("source".to_string(), source.to_string()));
    }
    family
}

fn record_pg(metrics: &AggregateMetrics, stats: &PgStats) {
    metrics.pg_up.with_label_values(&[] as &[&str]).set(1);
    metrics.pg_connections.reset();
    for (state, count) in &stats.connections {
        metrics
            .pg_connections
            .with_label_values(&[state.as_str()])
            .set(*count);
    }
    metrics
        .pg_database_size_bytes
        .with_label_values(&[] as &[&str])
        .set(stats.database_size_bytes);
    metrics.todos.reset();
    if let Some((completed, open)) = stats.todos {
        metrics.todos.with_label_values(&["true"]).set(completed);
        metrics.todos.with_label_values(&["false"]).set(open);
    }
    metrics
        .pg_oldest_transaction_age_seconds
        .with_label_values(&[] as &[&str])
        .set(stats.oldest_transaction_age_seconds);
}

/// `url` for logs and messages, without what may be a credential (one
/// redaction for every URL the programs log: `todo_common::redact`).
pub(crate) use todo_common::redact::redacted_url as redacted;

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// The component `run` supervises: reports the aggregation's health and,
/// with `aggregate.remote_write.url` set, pushes the series.
pub struct AggregateComponent {
    aggregator: Arc<Aggregator>,
}

/// The aggregator as remote_write sees it ([`remote_write::SeriesSource`]).
struct Pushed(Arc<Aggregator>);

impl remote_write::SeriesSource for Pushed {
    fn families(&self) -> BoxFuture<'_, Vec<Family>> {
        Box::pin(async move { self.0.families().await.1 })
    }

    fn pushed(&self, problem: Option<String>) {
        self.0.remote_write_outcome(problem);
    }
}

impl AggregateComponent {
    /// The component around an aggregator shared with the admin listener.
    pub fn new(aggregator: Arc<Aggregator>) -> AggregateComponent {
        AggregateComponent { aggregator }
    }
}

impl Component for AggregateComponent {
    fn name(&self) -> &'static str {
        "aggregate"
    }

    fn run(
        self: Arc<Self>,
        health: HealthHandle,
        mut shutdown: Shutdown,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            *self.aggregator.health.lock().expect("never poisoned") = Some(health);
            // A first collection, so readiness says at once whether the app
            // and the database can be read. Reported even when it comes from
            // the cache (a restart by the supervisor within the cache's TTL),
            // which would otherwise leave the component shown as failed.
            let snapshot = self.aggregator.snapshot().await;
            self.aggregator.report_health(&snapshot.problems);
            match self.aggregator.settings.remote_write.url.clone() {
                Some(url) => {
                    remote_write::run(
                        Arc::new(Pushed(self.aggregator.clone())),
                        self.aggregator.metrics.aggregate.clone(),
                        url,
                        self.aggregator.settings.remote_write.clone(),
                        shutdown,
                    )
                    .await
                }
                None => {
                    shutdown.requested().await;
                    Ok(())
                }
            }
        })
    }
}
