//! `todo-common`: what todo-app and todo-sidecar truly share, kept once.
//!
//! - `configuration`: layered settings loading and the shared `SettingsError`.
//! - `pg_url`: PostgreSQL URLs (connection options, database names,
//!   percent-decoding).
//! - `redact`: any URL made safe to log.
//! - `telemetry`: logging and OTLP tracing set up once per process.
//! - `bunyan`: the log line format (a layer of `telemetry`).
//! - `connection_errors`: actix-http's per-connection errors counted and
//!   summarised instead of logged one by one (a layer of `telemetry`).
//! - `metrics`: process metrics, registry rendering, and the counters of
//!   `telemetry` that each program registers in its own registry.
//! - `http`: outbound HTTP (client builders, the rustls provider, secret
//!   files, backoff, `Retry-After`, status classification).
//! - `test_support` (feature `test-support`, for the programs' tests only):
//!   TLS material for test servers.

pub mod bunyan;
pub mod configuration;
pub mod connection_errors;
pub mod http;
pub mod metrics;
pub mod pg_url;
pub mod redact;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;
