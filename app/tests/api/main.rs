//! API tests: one binary, one module per area; every test gets its own database.

mod auth;
mod cli;
mod configuration;
mod database_down;
mod database_tls;
mod errors;
mod health;
mod helpers;
mod limits;
mod lookups;
mod methods;
mod migrations;
mod observability;
mod openapi;
mod pagination;
mod shutdown;
mod tls;
mod todos;
