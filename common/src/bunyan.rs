//! The log line format: one bunyan JSON object per event, written by
//! [`BunyanLayer`].
//!
//! The lines are those `tracing-bunyan-formatter` writes (its
//! `JsonStorageLayer` and `BunyanFormattingLayer`, which this layer replaced,
//! and against which its tests still compare it): the bunyan core fields
//! `v`, `name`, `msg`, `level`, `hostname`, `pid` and `time` in that order,
//! then `target`, `line` and `file`, then the event's fields, then the
//! fields of the span the event happened in (a span holds its parent's
//! fields as they were when it was created, and its own). An event inside a
//! span has the span's name in its message: `[HTTP REQUEST - EVENT] request
//! completed`. Spans write no lines of their own.
//!
//! Why not that crate: it built a map of JSON values for every span and
//! every event (hashing each key, allocating each value), formatted the
//! message and the time through `format!`, and looked every key up in its
//! set of skipped fields. With one log line per request that was about a
//! fifth of the CPU of a GET (issue 14: 6.5 of 34.8 µs, `RUST_LOG=warn`
//! against `info`). Here a span renders its fields to JSON text once, when
//! they are recorded, and an event is written into a reused per-thread
//! buffer with no allocation but the one the non-blocking writer makes.
//!
//! Three differences from the crate, on input it handled unevenly: a key
//! is written once per line (the first of the core fields, the event's
//! fields and the span's fields wins; the crate wrote duplicate keys, whose
//! meaning depends on the JSON parser); an event with an explicit parent
//! span carries that span's fields rather than the current one's; and a
//! raw identifier's `r#` is dropped from every key (the crate dropped it
//! from `Debug` fields only).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Keys the bunyan format itself uses: never taken from an event's or a
/// span's fields.
const CORE_KEYS: [&str; 10] = [
    "v", "name", "msg", "level", "hostname", "pid", "time", "target", "line", "file",
];

/// Writes every event as one bunyan JSON line to `make_writer`.
pub struct BunyanLayer<W> {
    make_writer: W,
    /// `{"v":0,"name":<name>,"msg":`, the same for every line.
    head: Vec<u8>,
    /// `,"hostname":<hostname>,"pid":<pid>,"time":"`.
    host_and_pid: Vec<u8>,
}

impl<W> BunyanLayer<W>
where
    W: for<'a> MakeWriter<'a> + 'static,
{
    /// Lines of program `name` (the bunyan `name` field), written to `make_writer`.
    pub fn new(name: &str, make_writer: W) -> BunyanLayer<W> {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let mut head = br#"{"v":0,"name":"#.to_vec();
        write_json_string(&mut head, name);
        head.extend_from_slice(br#","msg":"#);
        let mut host_and_pid = br#","hostname":"#.to_vec();
        write_json_string(&mut host_and_pid, &hostname);
        write!(host_and_pid, r#","pid":{},"time":""#, std::process::id())
            .expect("writing to a Vec cannot fail");
        BunyanLayer {
            make_writer,
            head,
            host_and_pid,
        }
    }

    /// The event's line, written into `scratch.line`.
    fn format(
        &self,
        event: &Event<'_>,
        span_fields: Option<(&str, &SpanFields)>,
        scratch: &mut Scratch,
    ) {
        let Scratch {
            line,
            fields,
            message,
            keys,
        } = scratch;
        line.clear();
        fields.clear();
        message.clear();
        keys.clear();
        keys.extend_from_slice(&CORE_KEYS);

        let mut visitor = EventVisitor {
            fields,
            message,
            has_message: false,
            keys,
        };
        event.record(&mut visitor);
        let has_message = visitor.has_message;
        let metadata = event.metadata();

        line.extend_from_slice(&self.head);
        line.push(b'"');
        if let Some((span_name, _)) = span_fields {
            line.push(b'[');
            let plain = |byte: u8| byte.is_ascii() && !NEEDS_ESCAPE[usize::from(byte)];
            if span_name.bytes().all(plain) {
                let start = line.len();
                line.extend_from_slice(span_name.as_bytes());
                line[start..].make_ascii_uppercase();
            } else {
                write_escaped_str(line, &span_name.to_uppercase());
            }
            line.extend_from_slice(b" - EVENT] ");
        }
        if has_message {
            write_escaped_str(line, message);
        } else {
            write_escaped_str(line, metadata.target());
        }
        line.extend_from_slice(br#"","level":"#);
        line.extend_from_slice(bunyan_level(metadata.level()).as_bytes());
        line.extend_from_slice(&self.host_and_pid);
        write_rfc3339(line, Utc::now());
        line.extend_from_slice(br#"","target":"#);
        write_json_string(line, metadata.target());
        line.extend_from_slice(br#","line":"#);
        match metadata.line() {
            Some(number) => write_json_u64(line, u64::from(number)),
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(br#","file":"#);
        match metadata.file() {
            Some(file) => write_json_string(line, file),
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(fields);
        if let Some((_, span_fields)) = span_fields {
            for (key, member) in span_fields.members() {
                if !keys.contains(&key) {
                    line.push(b',');
                    line.extend_from_slice(member);
                }
            }
        }
        line.extend_from_slice(b"}\n");
    }
}

impl<S, W> Layer<S> for BunyanLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = span
            .parent()
            .and_then(|parent| parent.extensions().get::<SpanFields>().cloned())
            .unwrap_or_else(SpanFields::with_room);
        attributes.record(&mut SpanVisitor(&mut fields));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut SpanVisitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let span = ctx.event_span(event);
        let extensions = span.as_ref().map(|span| span.extensions());
        let empty = SpanFields::default();
        let span_fields = span.as_ref().map(|span| {
            let fields = extensions
                .as_ref()
                .and_then(|extensions| extensions.get::<SpanFields>())
                .unwrap_or(&empty);
            (span.name(), fields)
        });
        SCRATCH.with(|scratch| {
            // An event written while this thread writes another (the writer
            // logging) gets a buffer of its own.
            let mut own;
            let mut borrowed = scratch.try_borrow_mut();
            let scratch = match borrowed.as_deref_mut() {
                Ok(scratch) => scratch,
                Err(_) => {
                    own = Scratch::default();
                    &mut own
                }
            };
            self.format(event, span_fields, scratch);
            // A line that cannot be written is lost: the non-blocking writer
            // counts what it drops, and there is nowhere else to report it.
            let _ = self
                .make_writer
                .make_writer_for(event.metadata())
                .write_all(&scratch.line);
            // One huge line (a large field) must not keep its buffers for
            // the thread's life.
            if scratch.line.capacity() > KEPT_BUFFER_BYTES {
                *scratch = Scratch::default();
            }
        });
    }
}

/// The most buffer space a thread keeps between lines.
const KEPT_BUFFER_BYTES: usize = 64 * 1024;

thread_local! {
    /// Each thread's buffers for formatting lines, kept between events.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Buffers reused from one line to the next.
#[derive(Default)]
struct Scratch {
    line: Vec<u8>,
    /// The event's fields as `,"key":value` members.
    fields: Vec<u8>,
    /// The event's `message` field, as text.
    message: String,
    /// Keys written so far on the line.
    keys: Vec<&'static str>,
}

/// A span's fields as JSON members (`"key":value`), kept in the span's
/// extensions; a span starts with a copy of its parent's.
#[derive(Clone, Default)]
struct SpanFields {
    json: Vec<u8>,
    /// Each member's key and where it is in `json`.
    members: Vec<(&'static str, usize, usize)>,
}

impl SpanFields {
    /// Room for a request span's fields (request id, owner, trace and span
    /// ids: about 150 bytes), so that recording them does not grow the
    /// buffers one doubling at a time.
    fn with_room() -> SpanFields {
        SpanFields {
            json: Vec::with_capacity(256),
            members: Vec::with_capacity(4),
        }
    }

    fn members(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.members
            .iter()
            .map(|&(key, start, end)| (key, &self.json[start..end]))
    }

    /// Sets `key` to the rendered `value`, replacing an earlier value.
    fn set(&mut self, key: &'static str, write_value: impl FnOnce(&mut Vec<u8>)) {
        if let Some(index) = self.members.iter().position(|&(known, ..)| known == key) {
            // Rare (a field recorded twice): rebuild without the old member.
            let (_, start, end) = self.members.remove(index);
            self.json.drain(start..end);
            for member in &mut self.members[index..] {
                member.1 -= end - start;
                member.2 -= end - start;
            }
        }
        let start = self.json.len();
        write_json_string(&mut self.json, key);
        self.json.push(b':');
        write_value(&mut self.json);
        self.members.push((key, start, self.json.len()));
    }
}

/// Records a span's fields into its [`SpanFields`].
struct SpanVisitor<'a>(&'a mut SpanFields);

impl Visit for SpanVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .set(field_key(field), |out| write_json_string(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0
            .set(field_key(field), |out| write_json_i64(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0
            .set(field_key(field), |out| write_json_u64(out, value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0
            .set(field_key(field), |out| write_json_f64(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0
            .set(field_key(field), |out| write_json_bool(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `log` records' metadata, which the line has as `target`, `line`
        // and `file` already (the crate left these out too).
        if !field.name().starts_with("log.") {
            self.0
                .set(field_key(field), |out| write_debug_string(out, value));
        }
    }
}

/// Records an event's fields: `message` as text, the others as members.
struct EventVisitor<'a> {
    fields: &'a mut Vec<u8>,
    message: &'a mut String,
    has_message: bool,
    keys: &'a mut Vec<&'static str>,
}

impl EventVisitor<'_> {
    /// Starts the member of `field` (a comma, the key, a colon), or returns
    /// false when its key was written already or is `message` (which is the
    /// line's `msg` when it is text, and left out otherwise, as the crate did).
    fn member(&mut self, field: &Field) -> bool {
        let key = field_key(field);
        if key == "message" || self.keys.contains(&key) {
            return false;
        }
        self.keys.push(key);
        self.fields.push(b',');
        write_json_string(self.fields, key);
        self.fields.push(b':');
        true
    }
}

impl Visit for EventVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
            self.has_message = true;
        } else if self.member(field) {
            write_json_string(self.fields, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.member(field) {
            write_json_i64(self.fields, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.member(field) {
            write_json_u64(self.fields, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.member(field) {
            write_json_f64(self.fields, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.member(field) {
            write_json_bool(self.fields, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name == "message" {
            let _ = write!(self.message, "{value:?}");
            self.has_message = true;
        } else if !name.starts_with("log.") && self.member(field) {
            write_debug_string(self.fields, value);
        }
    }
}

/// The key a field is written under: its name without a raw identifier's
/// `r#` (`r#type = …` is `"type"`).
fn field_key(field: &Field) -> &'static str {
    let name = field.name();
    name.strip_prefix("r#").unwrap_or(name)
}

/// The bunyan level of a `tracing` level.
fn bunyan_level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "50",
        Level::WARN => "40",
        Level::INFO => "30",
        Level::DEBUG => "20",
        Level::TRACE => "10",
    }
}

/// An unsigned integer as JSON: its decimal digits.
fn write_json_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// A signed integer as JSON.
fn write_json_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    write_json_u64(out, value.unsigned_abs());
}

/// A float as JSON, as serde_json writes it (`null` when not finite).
fn write_json_f64(out: &mut Vec<u8>, value: f64) {
    serde_json::to_writer(out, &value).expect("a float serializes");
}

fn write_json_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

/// `value` as a JSON string, quotes included.
fn write_json_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    write_escaped_str(out, value);
    out.push(b'"');
}

/// `value`'s `Debug` text as a JSON string, escaped as it is written.
fn write_debug_string(out: &mut Vec<u8>, value: &dyn fmt::Debug) {
    out.push(b'"');
    let _ = write!(EscapingWriter(out), "{value:?}");
    out.push(b'"');
}

/// Escapes what it is given into a JSON string's contents.
struct EscapingWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for EscapingWriter<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped_str(self.0, text);
        Ok(())
    }
}

fn write_escaped_str(out: &mut Vec<u8>, text: &str) {
    write_escaped(out, text.as_bytes());
}

/// Which bytes JSON strings escape: control characters, `"` and `\\`.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// JSON string escaping as serde_json does it: `"` and `\` escaped,
/// control characters as `\b \f \n \r \t` or `\u00XX`, everything else
/// (non-ASCII included) as it is. `bytes` is UTF-8 (or ASCII). Runs of
/// bytes that need no escape (all of them, nearly always) are copied whole.
fn write_escaped(out: &mut Vec<u8>, mut bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    while let Some(index) = bytes
        .iter()
        .position(|&byte| NEEDS_ESCAPE[usize::from(byte)])
    {
        out.extend_from_slice(&bytes[..index]);
        let byte = bytes[index];
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]),
        }
        bytes = &bytes[index + 1..];
    }
    out.extend_from_slice(bytes);
}

/// `at` as RFC 3339 in UTC, as the `time` crate writes it (the crate's
/// format): `2026-12-02T07:30:00.123456789Z`, trailing zeros of the
/// fraction dropped, no fraction on a whole second.
fn write_rfc3339(out: &mut Vec<u8>, at: DateTime<Utc>) {
    let (date, time) = (at.date_naive(), at.time());
    let mut text = *b"0000-00-00T00:00:00";
    write_digits(&mut text[0..4], date.year().clamp(0, 9999) as u32);
    write_digits(&mut text[5..7], date.month());
    write_digits(&mut text[8..10], date.day());
    write_digits(&mut text[11..13], time.hour());
    write_digits(&mut text[14..16], time.minute());
    write_digits(&mut text[17..19], time.second());
    out.extend_from_slice(&text);
    // A leap second's nanoseconds run past 10^9: the crate writes 60 seconds
    // then; the fraction is what matters here.
    let mut nanos = time.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let mut width = 9;
        while nanos % 10 == 0 {
            nanos /= 10;
            width -= 1;
        }
        let mut fraction = [b'.'; 10];
        write_digits(&mut fraction[1..=width], nanos);
        out.extend_from_slice(&fraction[..=width]);
    }
    out.push(b'Z');
}

/// Writes `value` as decimal digits filling `out`, zero-padded on the left.
fn write_digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Map, Value};
    use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::registry::Registry;

    use super::*;

    /// Collects what is written, line by line.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    /// The crate's formatter without its span start and end lines, as
    /// todo-common used it before this layer.
    struct EventsOnly<L>(L);

    impl<S, L> Layer<S> for EventsOnly<L>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        L: Layer<S>,
    {
        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            self.0.on_event(event, ctx);
        }
    }

    /// The lines `events` writes through this layer.
    fn ours(events: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let subscriber = Registry::default().with(BunyanLayer::new("todo-test", captured.clone()));
        tracing::subscriber::with_default(subscriber, events);
        captured.lines()
    }

    /// The lines `events` writes through tracing-bunyan-formatter.
    fn reference(events: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let subscriber = Registry::default().with(JsonStorageLayer).with(EventsOnly(
            BunyanFormattingLayer::new("todo-test".to_string(), captured.clone()),
        ));
        tracing::subscriber::with_default(subscriber, events);
        captured.lines()
    }

    /// A line as a JSON object without its `time`, checked to be one a
    /// moment ago in the `time` crate's RFC 3339 form.
    fn without_time(line: &str) -> Map<String, Value> {
        let Value::Object(mut object) = serde_json::from_str(line).unwrap() else {
            panic!("not a JSON object: {line}");
        };
        let time = object
            .remove("time")
            .expect("a time")
            .as_str()
            .unwrap()
            .to_string();
        let parsed = DateTime::parse_from_rfc3339(&time).unwrap();
        assert!(
            (Utc::now() - parsed.with_timezone(&Utc))
                .num_seconds()
                .abs()
                < 60
        );
        assert!(time.ends_with('Z') && !time.contains("0Z"), "{time}");
        object
    }

    #[derive(Debug)]
    struct Opaque {
        #[allow(dead_code)]
        inner: &'static str,
    }

    /// Events of every kind the programs write: with and without spans
    /// (nested, with a field recorded later), every field type, text that
    /// needs escaping, levels, an event without a message, a `log` record.
    fn every_kind_of_event() {
        tracing::info!("started");
        tracing::warn!(
            port = 8080u64,
            delta = -3i64,
            ratio = 0.25,
            ok = true,
            zero = 0u64,
            most = u64::MAX,
            least = i64::MIN,
            "plain fields"
        );
        tracing::error!(
            nan = f64::NAN,
            debug = ?Opaque { inner: "x" },
            shown = %"display \"quoted\"",
            error = &std::io::Error::other("disk full") as &(dyn std::error::Error + 'static),
            "an error"
        );
        tracing::debug!(
            text = "tab\tnew\nline\u{1}bell\u{7}é✓\u{1F600} \\ /",
            "escapes"
        );
        tracing::info!(only = 1u64);
        let outer = tracing::info_span!(
            "HTTP request",
            request_id = "abc-123",
            owner = tracing::field::Empty
        );
        outer.in_scope(|| {
            tracing::info!(status = 200u64, "inside");
            outer.record("owner", "alice");
            let inner = tracing::info_span!("db query", operation = "get_todo");
            inner.in_scope(|| {
                tracing::warn!(route = "/api/todos/{id}", "nested");
            });
            tracing::trace!("after the nested span");
        });
        let name_with_unicode = tracing::info_span!("überprüfung", n = 1u64);
        name_with_unicode.in_scope(|| tracing::info!("unicode span name"));
        let name_to_escape = tracing::info_span!("say \"hi\"\tnow");
        name_to_escape.in_scope(|| tracing::info!("quoted span name"));
        tracing_log::format_trace(
            &log::Record::builder()
                .args(format_args!("from the log crate"))
                .level(log::Level::Warn)
                .target("r2d2")
                .module_path(Some("r2d2::pool"))
                .file(Some("src/pool.rs"))
                .line(Some(42))
                .build(),
        )
        .unwrap();
    }

    #[test]
    fn lines_carry_what_tracing_bunyan_formatter_wrote() {
        let ours = ours(every_kind_of_event);
        let reference = reference(every_kind_of_event);

        assert_eq!(ours.len(), 11, "{ours:#?}");
        assert_eq!(ours.len(), reference.len(), "{ours:#?}\n{reference:#?}");
        for (ours, reference) in ours.iter().zip(&reference) {
            assert_eq!(
                without_time(ours),
                without_time(reference),
                "\n{ours}\n{reference}"
            );
        }
    }

    #[test]
    fn core_fields_come_first_in_bunyan_order() {
        let lines = ours(|| tracing::info!(extra = 1u64, "ordered"));
        let keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(&lines[0])
            .unwrap()
            .keys()
            .cloned()
            .collect();

        // serde_json's Map is sorted; the order is checked on the text.
        assert_eq!(keys.len(), 11);
        let positions: Vec<usize> = [
            "\"v\"",
            "\"name\"",
            "\"msg\"",
            "\"level\"",
            "\"hostname\"",
            "\"pid\"",
            "\"time\"",
            "\"target\"",
            "\"line\"",
            "\"file\"",
            "\"extra\"",
        ]
        .iter()
        .map(|key| lines[0].find(key).unwrap())
        .collect();
        assert!(positions.is_sorted(), "{}", lines[0]);
    }

    #[test]
    fn a_key_is_written_once_the_event_winning_over_its_span() {
        let lines = ours(|| {
            let span = tracing::info_span!("request", owner = "span-owner", request_id = "r1");
            span.in_scope(|| tracing::info!(owner = "event-owner", target = "not-the-target", "x"));
        });
        let line = &lines[0];

        assert_eq!(line.matches("\"owner\"").count(), 1, "{line}");
        assert_eq!(line.matches("\"target\"").count(), 1, "{line}");
        let object: Map<String, Value> = serde_json::from_str(line).unwrap();
        assert_eq!(object["owner"], "event-owner");
        assert_eq!(object["request_id"], "r1");
        assert_eq!(object["target"], module_path!());
    }

    #[test]
    fn a_field_recorded_twice_keeps_its_last_value() {
        let lines = ours(|| {
            let span =
                tracing::info_span!("request", a = 1u64, b = tracing::field::Empty, c = 3u64);
            span.record("a", 10u64);
            span.record("b", 2u64);
            span.record("a", 100u64);
            span.in_scope(|| tracing::info!("x"));
        });
        let object: Map<String, Value> = serde_json::from_str(&lines[0]).unwrap();

        assert_eq!(
            (&object["a"], &object["b"], &object["c"]),
            (&100.into(), &2.into(), &3.into())
        );
        assert_eq!(lines[0].matches("\"a\"").count(), 1, "{}", lines[0]);
    }

    #[test]
    fn an_explicit_parent_gives_its_fields_and_name() {
        let lines = ours(|| {
            let parent = tracing::info_span!("worker", worker = 7u64);
            let current = tracing::info_span!("request", request_id = "r1");
            current.in_scope(|| tracing::info!(parent: &parent, "from the worker"));
        });
        let object: Map<String, Value> = serde_json::from_str(&lines[0]).unwrap();

        assert_eq!(object["msg"], "[WORKER - EVENT] from the worker");
        assert_eq!(object["worker"], 7);
        assert!(!object.contains_key("request_id"));
    }

    #[test]
    fn escaping_matches_serde_json() {
        let mut every_char: String = (0u8..=0x7f).map(char::from).collect();
        every_char.push_str("é✓\u{1F600}\u{2028}");
        let mut out = Vec::new();

        write_json_string(&mut out, &every_char);

        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&every_char).unwrap()
        );
    }

    #[test]
    fn times_drop_trailing_zeros_of_the_fraction() {
        let at = |text: &str| {
            let mut out = Vec::new();
            write_rfc3339(
                &mut out,
                DateTime::parse_from_rfc3339(text).unwrap().to_utc(),
            );
            String::from_utf8(out).unwrap()
        };

        assert_eq!(
            at("2026-12-02T07:30:05.123456789Z"),
            "2026-12-02T07:30:05.123456789Z"
        );
        assert_eq!(at("2026-12-02T07:30:05.120Z"), "2026-12-02T07:30:05.12Z");
        assert_eq!(at("2026-01-09T00:00:00Z"), "2026-01-09T00:00:00Z");
        assert_eq!(
            at("0999-12-31T23:59:59.000000001+00:00"),
            "0999-12-31T23:59:59.000000001Z"
        );
    }

    #[test]
    fn a_huge_line_is_written_whole_and_its_buffers_are_not_kept() {
        let huge = "x".repeat(200 * 1024);

        let lines = ours(|| tracing::info!(huge = huge.as_str(), "big"));

        let object: Map<String, Value> = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(object["huge"].as_str().unwrap().len(), huge.len());
        SCRATCH.with(|scratch| {
            assert!(scratch.borrow().line.capacity() <= KEPT_BUFFER_BYTES);
        });
    }

    #[test]
    fn an_event_written_while_writing_another_gets_a_buffer_of_its_own() {
        SCRATCH.with(|scratch| {
            let _held = scratch.borrow_mut();
            let lines = ours(|| tracing::info!(n = 1u64, "while busy"));

            assert_eq!(lines.len(), 1);
            let object: Map<String, Value> = serde_json::from_str(&lines[0]).unwrap();
            assert_eq!(object["msg"], "while busy");
        });
    }
}
