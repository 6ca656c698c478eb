//! Connections that end in an error before a request reaches a handler
//! (todo-app's API and admin listeners, todo-sidecar's admin listener: all
//! actix-web): request heads actix-http's parser refuses (malformed, too
//! large, an unknown HTTP version) and connections broken mid-request.
//!
//! actix-http answers those itself (see `docs/architecture.md`, "What the
//! HTTP parser answers") and logs each one at ERROR, without a request id:
//! anyone, without a key, could fill the logs with errors and page whoever
//! watches them. [`ConnectionErrorLayer`] takes those lines out of the log,
//! counts each in `todo_http_connection_errors_total{reason}`, and a
//! summary goes out at WARN at most once per [`SUMMARY_INTERVAL`]: the first
//! error at once, later ones gathered.

use std::fmt::Write as _;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use crate::metrics::connection_errors;

/// The shortest time between two summary lines.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Where actix-http logs a connection's error (`error!("stream error: …")`).
const DISPATCHER_TARGET: &str = "actix_http::h1::dispatcher";
const STREAM_ERROR_PREFIX: &str = "stream error: ";

/// Why a connection ended in an error: the `reason` label, a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request head was over actix-http's limits (size, 96 headers).
    TooLarge,
    Method,
    Uri,
    Version,
    /// A malformed header, a missing or repeated `Host`, both
    /// `Content-Length` and `Transfer-Encoding`, a folded header.
    Header,
    /// Another error of the request parser.
    Parse,
    /// The connection broke (reset by the client, say).
    Io,
    Other,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::TooLarge,
        Reason::Method,
        Reason::Uri,
        Reason::Version,
        Reason::Header,
        Reason::Parse,
        Reason::Io,
        Reason::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::Method => "method",
            Reason::Uri => "uri",
            Reason::Version => "version",
            Reason::Header => "header",
            Reason::Parse => "parse",
            Reason::Io => "io",
            Reason::Other => "other",
        }
    }

    /// Classifies actix-http's error text (its `DispatchError` and
    /// `ParseError` display forms); anything unknown is `parse` or `other`.
    fn of(error: &str) -> Reason {
        if let Some(parse) = error.strip_prefix("request parse error: ") {
            return match parse {
                "message head is too large" => Reason::TooLarge,
                "invalid method specified" => Reason::Method,
                "invalid HTTP version specified" => Reason::Version,
                "invalid Header provided" => Reason::Header,
                uri if uri.starts_with("URI error") => Reason::Uri,
                _ => Reason::Parse,
            };
        }
        if error.starts_with("I/O error") {
            Reason::Io
        } else {
            Reason::Other
        }
    }

    fn index(self) -> usize {
        Reason::ALL
            .iter()
            .position(|reason| *reason == self)
            .expect("every reason is in ALL")
    }
}

/// Drops actix-http's per-connection ERROR lines, counting and summarising
/// them instead. Every other event passes untouched after one comparison of
/// its level.
pub struct ConnectionErrorLayer;

impl<S: Subscriber> Layer<S> for ConnectionErrorLayer {
    fn event_enabled(&self, event: &Event<'_>, _context: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if *metadata.level() != Level::ERROR || metadata.target() != DISPATCHER_TARGET {
            return true;
        }
        let mut message = MessageText::default();
        event.record(&mut message);
        match message.0.strip_prefix(STREAM_ERROR_PREFIX) {
            Some(error) => {
                record(Reason::of(error), error);
                false
            }
            None => true,
        }
    }
}

#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// Errors seen since the last summary line.
#[derive(Default)]
struct Pending {
    counts: [u64; Reason::ALL.len()],
    last_error: String,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    counts: [0; Reason::ALL.len()],
    last_error: String::new(),
});

/// Wakes the summary thread (started with the first error).
static SUMMARY_WAKER: OnceLock<SyncSender<()>> = OnceLock::new();

fn record(reason: Reason, error: &str) {
    connection_errors()
        .with_label_values(&[reason.label()])
        .inc();
    {
        let mut pending = PENDING.lock().expect("never poisoned");
        pending.counts[reason.index()] += 1;
        pending.last_error.clear();
        pending.last_error.push_str(error);
    }
    let waker = SUMMARY_WAKER.get_or_init(|| {
        let (waker, woken) = std::sync::mpsc::sync_channel(1);
        // A log line cannot be written from here (tracing drops events
        // raised while it dispatches one), so a thread writes the summaries.
        std::thread::Builder::new()
            .name("connection-errors".into())
            .spawn(move || summarise(woken))
            .expect("the summary thread starts");
        waker
    });
    // A full channel means a wake-up is already queued.
    let _ = waker.try_send(());
}

/// Logs what [`PENDING`] holds whenever woken, then sleeps for
/// [`SUMMARY_INTERVAL`]: errors during the sleep queue one wake-up, so they
/// are summarised together right after it.
fn summarise(woken: Receiver<()>) {
    while woken.recv().is_ok() {
        let Pending { counts, last_error } =
            std::mem::take(&mut *PENDING.lock().expect("never poisoned"));
        let total: u64 = counts.iter().sum();
        if total > 0 {
            let reasons = Reason::ALL
                .iter()
                .zip(counts)
                .filter(|(_, count)| *count > 0)
                .map(|(reason, count)| format!("{}={count}", reason.label()))
                .collect::<Vec<_>>()
                .join(" ");
            tracing::warn!(
                count = total,
                reasons = %reasons,
                last_error = %last_error,
                "HTTP connections ended in an error before reaching the API (malformed requests or broken connections); see todo_http_connection_errors_total"
            );
        }
        std::thread::sleep(SUMMARY_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actix_error_texts_map_to_their_reasons() {
        for (text, reason) in [
            (
                "request parse error: message head is too large",
                Reason::TooLarge,
            ),
            (
                "request parse error: invalid method specified",
                Reason::Method,
            ),
            (
                "request parse error: URI error: invalid uri character",
                Reason::Uri,
            ),
            (
                "request parse error: invalid HTTP version specified",
                Reason::Version,
            ),
            (
                "request parse error: invalid Header provided",
                Reason::Header,
            ),
            ("request parse error: message is incomplete", Reason::Parse),
            (
                "I/O error: Connection reset by peer (os error 104)",
                Reason::Io,
            ),
            ("body error: boom", Reason::Other),
        ] {
            assert_eq!(Reason::of(text), reason, "{text}");
        }
    }
}
