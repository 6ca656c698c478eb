//! `todo-app`: parse the command line, start logging, load the settings, run.

use std::process::ExitCode;

use clap::Parser;
use todo_app::cli::{self, Cli, Command};
use todo_app::configuration::Settings;
use todo_app::telemetry;

fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    // Only the server logs to stdout; other commands keep stdout for their result.
    let _log_guard = if command.logs_to_stdout() {
        telemetry::init_stdout_logging("todo-app")
    } else {
        telemetry::init_stderr_logging("todo-app")
    };
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(error = %error, "invalid configuration");
            eprintln!("todo-app: {error}");
            return ExitCode::from(2);
        }
    };
    cli::run(command, settings)
}
