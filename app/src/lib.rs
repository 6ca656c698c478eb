//! `todo-app`: the todo HTTP API. See `startup` for how the pieces fit, and
//! `docs/architecture.md` in the repository for the contracts.

pub mod actors;
pub mod auth;
pub mod cli;
pub mod configuration;
pub mod db;
pub mod domain;
pub mod error;
pub mod log_file;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod schema;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod trace;
