//! `todo-sidecar`: parse the command line, start logging, load the settings, run.

use std::process::ExitCode;

use clap::Parser;
use todo_common::telemetry::{self, LogOutput};
use todo_sidecar::cli::{self, Cli, exit_code};
use todo_sidecar::configuration::Settings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One rustls crypto provider for the whole process (every outbound
    // client and the S3 store's): reqwest is built without one.
    todo_common::http::install_crypto_provider();
    // Only `run` logs to stdout (and exports traces when OTEL_* asks for it);
    // the backup commands keep stdout for their result and log to stderr.
    let _telemetry = if cli.command.logs_to_stdout() {
        telemetry::init_server_telemetry("todo-sidecar", LogOutput::stdout_only())
    } else {
        telemetry::init_command_telemetry("todo-sidecar")
    };
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(error = %error, "invalid configuration");
            eprintln!("todo-sidecar: {error}");
            return ExitCode::from(exit_code::CONFIGURATION);
        }
    };
    cli::run(cli.command, settings)
}
