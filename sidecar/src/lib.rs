//! `todo-sidecar`: the ops sidecar of todo-backend. `run` supervises the
//! components (see `component`) behind the admin listener (`admin`); the
//! `backup` commands operate on the snapshot store directly. Logging (and
//! OTLP traces), process metrics, configuration layering, PostgreSQL URLs
//! and outbound HTTP are `todo_common`'s, the same as todo-app's.

pub mod admin;
pub mod aggregate;
pub mod backup;
pub mod cli;
pub mod component;
pub mod configuration;
pub mod label;
/// Outbound HTTP for every client of the sidecar: `todo_common::http`.
pub use todo_common::http;
pub mod logship;
pub mod metrics;

/// The `User-Agent` of the sidecar's HTTP clients.
pub const USER_AGENT: &str = concat!("todo-sidecar/", env!("CARGO_PKG_VERSION"));
pub mod startup;
