//! `todo-app`: parse the command line, load the settings, start logging, run.

use std::process::ExitCode;

use clap::Parser;
use todo_app::cli::{self, Cli, Command};
use todo_app::configuration::Settings;
use todo_app::telemetry;

/// mimalloc instead of glibc's malloc: a request makes a few dozen small,
/// short-lived allocations (headers, JSON, the log line), which mimalloc's
/// per-thread free lists serve in fewer instructions and without the arena
/// consolidation glibc does under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    // One rustls crypto provider for the whole process (the HTTPS listener
    // and the OTLP exporter's client); feature unification in the workspace
    // can otherwise leave reqwest without one, or with two.
    todo_common::http::install_crypto_provider();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            // Logging is not set up yet (it depends on the settings).
            eprintln!("todo-app: {error}");
            return ExitCode::from(2);
        }
    };
    // Only the server logs to stdout; other commands keep stdout for their result.
    let _telemetry = if command.logs_to_stdout() {
        match telemetry::init_server_telemetry("todo-app", &settings.log) {
            Ok(guard) => guard,
            Err(error) => {
                let path = settings
                    .log
                    .file
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""));
                eprintln!("todo-app: cannot open log.file {}: {error}", path.display());
                return ExitCode::from(2);
            }
        }
    } else {
        telemetry::init_command_telemetry("todo-app")
    };
    cli::run(command, settings)
}
