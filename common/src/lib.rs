//! `todo-common`: what todo-app and todo-sidecar truly share, kept once.
//! `configuration` loads a program's layered settings, `pg_url` handles
//! PostgreSQL URLs (connection options, database names, percent-decoding),
//! `redact` makes any URL safe to log.

pub mod configuration;
pub mod pg_url;
pub mod redact;
