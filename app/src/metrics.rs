//! Every Prometheus metric of `todo-app`: names, help texts, labels and
//! buckets live here and nowhere else, except those both programs expose
//! the same way (process metrics and the telemetry counters:
//! `todo_trace_spans_dropped_total`, `todo_log_lines_dropped_total`,
//! `todo_http_connection_errors_total`), which `todo_common::metrics` owns
//! and this registry includes. One registry per [`Metrics`] value (no global
//! default registry), served on the admin port's `/metrics`.

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use todo_common::metrics::{register_process_metrics, register_telemetry_metrics, render_registry};

/// Buckets for a service whose p99 should be a few milliseconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `operation` label values of `todo_db_query_duration_seconds`: the
/// `DbOperation::NAME` of every database operation.
pub const DB_OPERATIONS: &[&str] = &[
    "create_todo",
    "get_todo",
    "list_todos",
    "update_todo",
    "delete_todo",
    "find_api_key",
    "touch_api_key",
];
/// `kind` label values of `todo_db_errors_total` (`DbError::kind`; `not_found` is not an error there).
pub const DB_ERROR_KINDS: &[&str] = &["unavailable", "overloaded", "timeout", "query"];
/// `state` label values of `todo_db_pool_connections`.
pub const POOL_STATES: &[&str] = &["idle", "active"];
/// `reason` label values of `todo_auth_failures_total`.
pub const AUTH_FAILURE_REASONS: &[&str] = &["missing", "malformed", "invalid"];
/// `result` label values of `todo_tls_certificate_reloads_total`.
pub const TLS_RELOAD_RESULTS: &[&str] = &["success", "failure"];

/// The app's metrics and the registry that exposes them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `todo_http_requests_total{method,route,status}`: answered requests.
    pub http_requests: IntCounterVec,
    /// `todo_http_request_duration_seconds{method,route}`: time to answer.
    pub http_request_duration: HistogramVec,
    /// `todo_http_requests_in_flight`: requests being handled now.
    pub http_requests_in_flight: IntGauge,
    /// `todo_db_query_duration_seconds{operation}`: time from a request's
    /// statement being sent (or its batch's) to its answer.
    pub db_query_duration: HistogramVec,
    /// `todo_db_errors_total{kind}`: database failures by [`crate::db::DbError::kind`].
    pub db_errors: IntCounterVec,
    /// `todo_db_pool_connections{state}`: the HTTP workers' open connections,
    /// `active` with statements in flight, `idle` without.
    pub db_pool_connections: IntGaugeVec,
    /// `todo_db_executor_queue_depth`: requests waiting for their statement
    /// to start (a pipeline slot, the connection, or their create batch).
    pub db_executor_queue_depth: IntGauge,
    /// `todo_auth_failures_total{reason}`: rejected `Authorization` headers.
    pub auth_failures: IntCounterVec,
    /// `todo_rate_limited_total`: requests answered 429 by the per-key limit.
    pub rate_limited: IntCounter,
    /// `todo_auth_unknown_key_lookups_refused_total`: requests answered 429
    /// because lookups of key ids not in the cache were over their limit.
    pub unknown_key_lookups_refused: IntCounter,
    /// `todo_in_flight_limited_total`: requests answered 429 because their
    /// key already had `auth.max_in_flight_per_key` requests in flight.
    pub in_flight_limited: IntCounter,
    /// `todo_tls_certificate_reloads_total{result}`: renewed TLS certificate
    /// files loaded (`success`) or refused (`failure`, the previous one kept).
    pub tls_certificate_reloads: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric. Panics only on a programming error
    /// (a duplicate or malformed name), which the unit test below catches.
    ///
    /// Every series whose label values are known in advance exists from the
    /// start, at 0 (Prometheus' instrumentation guidance): a counter that
    /// appears only at its first increment hides that increment from `rate()`
    /// and `increase()`, and dashboards would show "No data" instead of 0.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "todo_http_requests_total",
                "API requests answered, by method, matched route pattern and status code.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "todo_http_request_duration_seconds",
                "Time from receiving an API request to its response, by method and route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric");
        let http_requests_in_flight = IntGauge::new(
            "todo_http_requests_in_flight",
            "API requests being handled now.",
        )
        .expect("valid metric");
        let db_query_duration = HistogramVec::new(
            HistogramOpts::new(
                "todo_db_query_duration_seconds",
                "Time from a database statement being sent to its answer (a create's: its batch's), by operation.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        let db_errors = IntCounterVec::new(
            Opts::new(
                "todo_db_errors_total",
                "Database operations that failed, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let db_pool_connections = IntGaugeVec::new(
            Opts::new(
                "todo_db_pool_connections",
                "The HTTP workers' database connections, by state (active: statements in flight; idle).",
            ),
            &["state"],
        )
        .expect("valid metric");
        let db_executor_queue_depth = IntGauge::new(
            "todo_db_executor_queue_depth",
            "Requests waiting for their database statement to start (a pipeline slot, the connection, a create batch).",
        )
        .expect("valid metric");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "todo_auth_failures_total",
                "Requests rejected with 401, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let rate_limited = IntCounter::new(
            "todo_rate_limited_total",
            "Requests answered 429 by the per-key rate limit.",
        )
        .expect("valid metric");
        let unknown_key_lookups_refused = IntCounter::new(
            "todo_auth_unknown_key_lookups_refused_total",
            "Requests answered 429 because lookups of API key ids not in the cache were over auth.unknown_key_lookups_per_second.",
        )
        .expect("valid metric");
        let in_flight_limited = IntCounter::new(
            "todo_in_flight_limited_total",
            "Requests answered 429 because their API key already had auth.max_in_flight_per_key requests in flight.",
        )
        .expect("valid metric");
        let tls_certificate_reloads = IntCounterVec::new(
            Opts::new(
                "todo_tls_certificate_reloads_total",
                "Changed TLS certificate files loaded (result=success) or refused, the previous certificate kept (result=failure).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "todo_build_info",
                "Always 1; labels carry the running version and git revision.",
            ),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("TODO_GIT_REVISION")])
            .set(1);
        for operation in DB_OPERATIONS {
            db_query_duration.with_label_values(&[operation]);
        }
        for kind in DB_ERROR_KINDS {
            db_errors.with_label_values(&[kind]);
        }
        for state in POOL_STATES {
            db_pool_connections.with_label_values(&[state]);
        }
        for reason in AUTH_FAILURE_REASONS {
            auth_failures.with_label_values(&[reason]);
        }
        for result in TLS_RELOAD_RESULTS {
            tls_certificate_reloads.with_label_values(&[result]);
        }

        for collector in [
            Box::new(http_requests.clone()) as Box<dyn Collector>,
            Box::new(http_request_duration.clone()),
            Box::new(http_requests_in_flight.clone()),
            Box::new(db_query_duration.clone()),
            Box::new(db_errors.clone()),
            Box::new(db_pool_connections.clone()),
            Box::new(db_executor_queue_depth.clone()),
            Box::new(auth_failures.clone()),
            Box::new(rate_limited.clone()),
            Box::new(unknown_key_lookups_refused.clone()),
            Box::new(in_flight_limited.clone()),
            Box::new(tls_certificate_reloads.clone()),
            Box::new(build_info),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        register_telemetry_metrics(&registry);
        register_process_metrics(&registry);

        Metrics {
            registry,
            http_requests,
            http_request_duration,
            http_requests_in_flight,
            db_query_duration,
            db_errors,
            db_pool_connections,
            db_executor_queue_depth,
            auth_failures,
            rate_limited,
            unknown_key_lookups_refused,
            in_flight_limited,
            tls_certificate_reloads,
        }
    }

    /// Records the request connections' states (called at each scrape):
    /// open with statements in flight (`active`) or without (`idle`).
    pub fn observe_connections(&self, idle: i64, active: i64) {
        self.db_pool_connections
            .with_label_values(&["idle"])
            .set(idle);
        self.db_pool_connections
            .with_label_values(&["active"])
            .set(active);
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        render_registry(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        let metrics = Metrics::new();
        metrics.db_errors.with_label_values(&["unavailable"]).inc();
        let text = metrics.render();
        assert!(text.contains("todo_db_errors_total{kind=\"unavailable\"} 1"));
        assert!(text.contains("todo_build_info{"));
    }

    #[test]
    fn series_with_known_label_values_exist_at_zero_before_any_event() {
        let text = Metrics::new().render();

        let mut expected = Vec::new();
        for operation in DB_OPERATIONS {
            expected.push(format!(
                "todo_db_query_duration_seconds_count{{operation=\"{operation}\"}} 0"
            ));
        }
        for kind in DB_ERROR_KINDS {
            expected.push(format!("todo_db_errors_total{{kind=\"{kind}\"}} 0"));
        }
        for state in POOL_STATES {
            expected.push(format!("todo_db_pool_connections{{state=\"{state}\"}} 0"));
        }
        for reason in AUTH_FAILURE_REASONS {
            expected.push(format!("todo_auth_failures_total{{reason=\"{reason}\"}} 0"));
        }
        for result in TLS_RELOAD_RESULTS {
            expected.push(format!(
                "todo_tls_certificate_reloads_total{{result=\"{result}\"}} 0"
            ));
        }
        expected.push("todo_in_flight_limited_total 0".to_string());
        expected.push("todo_rate_limited_total 0".to_string());
        expected.push("todo_auth_unknown_key_lookups_refused_total 0".to_string());
        expected.push("todo_http_requests_in_flight 0".to_string());
        expected.push("todo_db_executor_queue_depth 0".to_string());
        for line in expected {
            assert!(text.lines().any(|l| l == line), "{line} missing in {text}");
        }
        for reason in todo_common::connection_errors::Reason::ALL {
            // Process-wide, like the spans below.
            let series = format!(
                "todo_http_connection_errors_total{{reason=\"{}\"}} ",
                reason.label()
            );
            assert!(text.contains(&series), "{series} missing in {text}");
        }
        for reason in todo_common::metrics::SPAN_DROP_REASONS {
            // Process-wide: other tests in this process may have counted spans.
            let series = format!("todo_trace_spans_dropped_total{{reason=\"{reason}\"}} ");
            assert!(text.contains(&series), "{series} missing in {text}");
        }
    }

    #[test]
    fn every_counted_database_error_kind_is_exposed_from_start_up() {
        use crate::db::DbError;

        let counted = [
            DbError::Unavailable("gone".into()),
            DbError::Overloaded("full"),
            DbError::Timeout,
            DbError::Query(diesel::result::Error::RollbackTransaction),
        ];

        for error in counted {
            assert!(DB_ERROR_KINDS.contains(&error.kind()), "{}", error.kind());
        }
    }
}
