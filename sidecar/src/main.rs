//! `todo-sidecar`: parse the command line, start logging, load the settings, run.

use std::process::ExitCode;

use clap::Parser;
use todo_app::configuration::LogSettings;
use todo_app::telemetry;
use todo_sidecar::cli::{self, Cli, exit_code};
use todo_sidecar::configuration::Settings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only `run` logs to stdout (and exports traces when OTEL_* asks for it);
    // the backup commands keep stdout for their result and log to stderr.
    let _telemetry = if cli.command.logs_to_stdout() {
        let stdout_only = LogSettings {
            file: None,
            stdout: true,
            max_bytes: 0,
            max_files: 0,
        };
        match telemetry::init_server_telemetry("todo-sidecar", &stdout_only) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("todo-sidecar: error: Failed to set up logging: {error}");
                return ExitCode::from(exit_code::FAILURE);
            }
        }
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
