//! `todo-sidecar`: parse the command line, start logging, load the settings, run.

use std::process::ExitCode;

use clap::Parser;
use todo_app::telemetry;
use todo_sidecar::backup::exit_code;
use todo_sidecar::cli::{self, Cli};
use todo_sidecar::configuration::Settings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only `run` logs to stdout; the backup commands keep stdout for their result.
    let _log_guard = if cli.command.logs_to_stdout() {
        telemetry::init_stdout_logging("todo-sidecar")
    } else {
        telemetry::init_stderr_logging("todo-sidecar")
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
