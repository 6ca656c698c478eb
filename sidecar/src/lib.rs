//! `todo-sidecar`: the ops sidecar of todo-backend. `run` supervises the
//! components (see `component`) behind the admin listener (`admin`); the
//! `backup` commands operate on the snapshot store directly. Logging (and
//! OTLP traces) is todo-app's `todo_app::telemetry`, shared rather than copied.

pub mod admin;
pub mod aggregate;
pub mod backup;
pub mod cli;
pub mod component;
pub mod configuration;
pub mod http;
pub mod logship;
pub mod metrics;
pub mod startup;
