//! The stdout sink: every line as read, one per line, on the sidecar's
//! stdout (for debugging, and for clusters that collect container stdout).

mod config;

use std::io::Write;

pub use config::StdoutSettings;

use super::DeliveryContext;
use crate::logship::event::Event;
use crate::logship::events::{LinesShipped, StdoutWriteFailed};

/// Writes lines to stdout.
pub struct StdoutSink;

impl StdoutSink {
    /// Writes `events`; a broken stdout is counted, never retried (nobody
    /// would read the retries either).
    pub fn write(&self, events: &[Event], context: &DeliveryContext<'_>) {
        let buffer = encode(events);
        let mut stdout = std::io::stdout().lock();
        let metrics = context.metrics;
        match stdout.write_all(&buffer).and_then(|()| stdout.flush()) {
            Ok(()) => LinesShipped {
                sink: "stdout",
                lines: events.len(),
            }
            .emit(metrics),
            Err(error) => {
                // The lock is released first: the warning goes to stdout too.
                drop(stdout);
                StdoutWriteFailed {
                    lines: events.len(),
                    error: &error,
                }
                .emit(metrics)
            }
        }
    }
}

/// The lines, one per line.
fn encode(events: &[Event]) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(events.iter().map(|e| e.text.len() + 1).sum());
    for event in events {
        buffer.extend_from_slice(event.text.as_bytes());
        buffer.push(b'\n');
    }
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logship::event::test_event;

    #[test]
    fn each_line_goes_on_its_own_line_as_read() {
        let events = [test_event(r#"{"msg":"a"}"#), test_event("plain b")];

        assert_eq!(encode(&events), b"{\"msg\":\"a\"}\nplain b\n");
    }
}
