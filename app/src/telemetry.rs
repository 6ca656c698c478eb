//! todo-app's logging and tracing: `todo_common::telemetry` (the same set-up
//! as todo-sidecar's: bunyan JSON lines through a non-blocking writer, OTLP
//! traces, drops and connection errors counted) with the app's own log
//! destination: the rotating `log.file` that the sidecar tails
//! ([`crate::log_file`]).

use std::io::Write;

use todo_common::telemetry::LogOutput;
pub use todo_common::telemetry::{TelemetryGuard, init_command_telemetry, tracer, traces_exported};

use crate::configuration::LogSettings;
use crate::log_file::RotatingFile;

/// Sets up logging (stdout unless `log.stdout` is false, the rotating file
/// when `log.file` is set) and, when the OTLP endpoint is configured, trace
/// export. For the server; fails only when `log.file` cannot be opened.
pub fn init_server_telemetry(name: &str, log: &LogSettings) -> std::io::Result<TelemetryGuard> {
    let file = match &log.file {
        Some(path) => Some(
            Box::new(RotatingFile::open(path, log.max_bytes, log.max_files)?)
                as Box<dyn Write + Send>,
        ),
        None => None,
    };
    // Settings::validate refuses log.stdout = false without a file, so
    // there is always at least one destination.
    let output = LogOutput {
        stdout: log.stdout,
        file,
    };
    Ok(todo_common::telemetry::init_server_telemetry(name, output))
}
