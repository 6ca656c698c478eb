//! A parser for the Prometheus text format 0.0.4 and OpenMetrics 1.0 text.
//!
//! Our own rather than `prometheus-parse` or `openmetrics-parser` (neither
//! was benchmarked here): the sidecar needs both formats with their edge
//! cases (escapes, exemplars, `# EOF`), a line-numbered error for garbage,
//! and a throughput in the range of Prometheus's own parser. One pass over
//! bytes with one allocation per label gives that (docs/aggregation.md).
//!
//! OpenMetrics is mapped onto the text format the sidecar serves: a counter
//! `foo` with `foo_total` samples becomes the family `foo_total`, `info`
//! becomes a gauge `foo_info`, `stateset` a gauge, `unknown` untyped, a
//! `gaugehistogram` its three gauges; `_created` samples, `# UNIT` and
//! exemplars are validated and dropped (the text format has no place for them).

use std::collections::HashMap;

use super::exposition::{Family, MetricType, Sample, Suffix, is_label_name};

/// Which syntax to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps in milliseconds, no exemplars.
    Text,
    /// `application/openmetrics-text`: timestamps in seconds, exemplars, `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header announces (text when absent or unknown).
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        match content_type {
            Some(value)
                if value
                    .trim_start()
                    .starts_with("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

/// Why an exposition could not be parsed: the line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message} (near `{near}`)")]
pub struct ParseError {
    /// 1-based line number (the line after the last one for "missing `# EOF`").
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// The start of the offending line.
    pub near: String,
}

/// The type as declared, before the OpenMetrics-only types are mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
    GaugeHistogram,
    Info,
    StateSet,
}

impl Declared {
    fn parse(name: &str, format: Format) -> Option<Declared> {
        Some(match (name, format) {
            ("counter", _) => Declared::Counter,
            ("gauge", _) => Declared::Gauge,
            ("histogram", _) => Declared::Histogram,
            ("summary", _) => Declared::Summary,
            ("untyped", Format::Text) | ("unknown", Format::OpenMetrics) => Declared::Untyped,
            ("gaugehistogram", Format::OpenMetrics) => Declared::GaugeHistogram,
            ("info", Format::OpenMetrics) => Declared::Info,
            ("stateset", Format::OpenMetrics) => Declared::StateSet,
            _ => return None,
        })
    }

    fn exposed(self) -> MetricType {
        match self {
            Declared::Counter => MetricType::Counter,
            Declared::Histogram => MetricType::Histogram,
            Declared::Summary => MetricType::Summary,
            Declared::Untyped => MetricType::Untyped,
            Declared::Gauge | Declared::GaugeHistogram | Declared::Info | Declared::StateSet => {
                MetricType::Gauge
            }
        }
    }
}

/// Where a sample line goes.
enum Route {
    /// Into family `index` as `suffix`.
    Into(usize, Suffix),
    /// Into the gauge family named like the sample (OpenMetrics `info` and
    /// `gaugehistogram` lines), created on first use.
    OwnGauge(usize),
    /// Validated and dropped (`_created`).
    Skip,
}

struct Builder {
    family: Family,
    declared: Option<Declared>,
    /// OpenMetrics counter whose samples end in `_total`: the family is
    /// exposed under that name.
    om_total: bool,
}

struct Parser<'a> {
    format: Format,
    families: Vec<Builder>,
    by_name: HashMap<String, usize>,
    current: Option<usize>,
    line_number: usize,
    line: &'a str,
}

/// Parses an exposition into families, in the order they first appear.
pub fn parse(text: &str, format: Format) -> Result<Vec<Family>, ParseError> {
    let mut parser = Parser {
        format,
        families: Vec::new(),
        by_name: HashMap::new(),
        current: None,
        line_number: 0,
        line: "",
    };
    let mut eof = false;
    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        parser.line_number = index + 1;
        parser.line = line;
        if eof {
            if line.is_empty() && index + 1 == text.split('\n').count() {
                continue;
            }
            return Err(parser.error("content after `# EOF`"));
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if format == Format::OpenMetrics && line == "# EOF" {
                eof = true;
                continue;
            }
            parser.metadata(comment)?;
        } else {
            parser.sample(line)?;
        }
    }
    if format == Format::OpenMetrics && !eof {
        parser.line_number += 1;
        parser.line = "";
        return Err(parser.error("no `# EOF` at the end: the answer is truncated"));
    }
    parser.finish()
}

impl<'a> Parser<'a> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        let near: String = self.line.chars().take(60).collect();
        ParseError {
            line: self.line_number,
            message: message.into(),
            near,
        }
    }

    fn family_index(&mut self, name: &str) -> usize {
        if let Some(&index) = self.by_name.get(name) {
            return index;
        }
        let index = self.families.len();
        self.families.push(Builder {
            family: Family::new(name, MetricType::Untyped),
            declared: None,
            om_total: false,
        });
        self.by_name.insert(name.to_string(), index);
        index
    }

    /// A `#` line: HELP, TYPE, UNIT, or a comment.
    fn metadata(&mut self, rest: &str) -> Result<(), ParseError> {
        let rest = rest.trim_start_matches([' ', '\t']);
        let (keyword, rest) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
        if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
            // The text format allows free comments; OpenMetrics does not, but
            // refusing a whole scrape over a comment helps nobody.
            return Ok(());
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let (name, value) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
        if !super::exposition::is_metric_name(name) {
            return Err(self.error(format!("invalid metric name in # {keyword}")));
        }
        let index = self.family_index(name);
        self.current = Some(index);
        let builder = &self.families[index];
        if !builder.family.samples.is_empty() {
            return Err(self.error(format!("# {keyword} for {name} after its samples")));
        }
        match keyword {
            "HELP" => {
                if builder.family.help.is_some() {
                    return Err(self.error(format!("second # HELP for {name}")));
                }
                self.families[index].family.help = Some(unescape_help(value));
            }
            "TYPE" => {
                if builder.declared.is_some() {
                    return Err(self.error(format!("second # TYPE for {name}")));
                }
                let declared = Declared::parse(value.trim(), self.format)
                    .ok_or_else(|| self.error(format!("unknown metric type `{}`", value.trim())))?;
                let builder = &mut self.families[index];
                builder.declared = Some(declared);
                builder.family.kind = declared.exposed();
            }
            _ => {} // UNIT: the text format has no place for it.
        }
        Ok(())
    }

    /// Which family and suffix a sample named `name` belongs to.
    fn route(&mut self, name: &str) -> Result<Route, ParseError> {
        // The common case first: the family just declared or just sampled.
        if let Some(index) = self.current
            && let Some(route) = self.route_into(index, name)?
        {
            return Ok(route);
        }
        if let Some(&index) = self.by_name.get(name)
            && let Some(route) = self.route_into(index, name)?
        {
            return Ok(route);
        }
        for suffix in [
            "_bucket", "_sum", "_count", "_total", "_created", "_info", "_gcount", "_gsum",
        ] {
            if let Some(base) = name.strip_suffix(suffix)
                && let Some(&index) = self.by_name.get(base)
                && let Some(route) = self.route_into(index, name)?
            {
                return Ok(route);
            }
        }
        if let Some(&index) = self.by_name.get(name) {
            let kind = self.families[index].family.kind.as_str();
            return Err(self.error(format!(
                "a sample named `{name}` does not fit its {kind} family"
            )));
        }
        let index = self.family_index(name);
        Ok(Route::Into(index, Suffix::None))
    }

    fn route_into(&mut self, index: usize, name: &str) -> Result<Option<Route>, ParseError> {
        let builder = &self.families[index];
        let Some(rest) = name.strip_prefix(builder.family.name.as_str()) else {
            return Ok(None);
        };
        let declared = builder.declared.unwrap_or(Declared::Untyped);
        let route = match (declared, rest) {
            (Declared::Counter, "") if !builder.om_total => Route::Into(index, Suffix::None),
            (Declared::Counter, "_total") if self.format == Format::OpenMetrics => {
                if !builder.om_total && !builder.family.samples.is_empty() {
                    return Err(self.error("counter with and without `_total` samples"));
                }
                self.families[index].om_total = true;
                Route::Into(index, Suffix::None)
            }
            (Declared::Gauge | Declared::Untyped | Declared::StateSet, "") => {
                Route::Into(index, Suffix::None)
            }
            (Declared::Summary, "") => Route::Into(index, Suffix::None),
            (Declared::Histogram, "_bucket") => Route::Into(index, Suffix::Bucket),
            (Declared::Histogram | Declared::Summary, "_sum") => Route::Into(index, Suffix::Sum),
            (Declared::Histogram | Declared::Summary, "_count") => {
                Route::Into(index, Suffix::Count)
            }
            (Declared::Counter | Declared::Histogram | Declared::Summary, "_created") => {
                Route::Skip
            }
            (Declared::Info, "_info")
            | (Declared::GaugeHistogram, "_bucket" | "_gcount" | "_gsum") => Route::OwnGauge(index),
            _ => return Ok(None),
        };
        Ok(Some(route))
    }

    fn sample(&mut self, line: &'a str) -> Result<(), ParseError> {
        let bytes = line.as_bytes();
        let name_end = bytes
            .iter()
            .position(|&byte| !(byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':'))
            .unwrap_or(bytes.len());
        let name = &line[..name_end];
        if !super::exposition::is_metric_name(name) {
            return Err(self.error("expected a metric name"));
        }
        let mut position = skip_blanks(bytes, name_end);
        let mut labels = Vec::new();
        if bytes.get(position) == Some(&b'{') {
            position = self.labels(line, position + 1, &mut labels)?;
            position = skip_blanks(bytes, position);
        } else if position == name_end && position < bytes.len() {
            return Err(self.error("expected `{` or a blank after the metric name"));
        }
        let value_end = token_end(bytes, position);
        let value = parse_value(&line[position..value_end])
            .ok_or_else(|| self.error(format!("invalid value `{}`", &line[position..value_end])))?;
        position = skip_blanks(bytes, value_end);
        let mut timestamp_ms = None;
        if position < bytes.len() && bytes[position] != b'#' {
            let end = token_end(bytes, position);
            timestamp_ms = Some(
                self.timestamp(&line[position..end])
                    .ok_or_else(|| self.error("invalid timestamp"))?,
            );
            position = skip_blanks(bytes, end);
        }
        if position < bytes.len() {
            if bytes[position] != b'#' || self.format != Format::OpenMetrics {
                return Err(self.error(if bytes[position] == b'#' {
                    "exemplars are only valid in OpenMetrics"
                } else {
                    "unexpected text after the value and timestamp"
                }));
            }
            self.exemplar(line, position + 1)?;
        }
        let (index, suffix) = match self.route(name)? {
            Route::Skip => return Ok(()),
            Route::Into(index, suffix) => {
                self.current = Some(index);
                (index, suffix)
            }
            Route::OwnGauge(parent) => {
                let help = self.families[parent].family.help.clone();
                let index = self.family_index(name);
                let builder = &mut self.families[index];
                if builder.declared.is_none() {
                    builder.declared = Some(Declared::Gauge);
                    builder.family.kind = MetricType::Gauge;
                    builder.family.help = help;
                }
                self.current = Some(parent);
                (index, Suffix::None)
            }
        };
        let kind = self.families[index].family.kind;
        if kind == MetricType::Histogram && suffix == Suffix::Bucket {
            match labels
                .iter()
                .find(|(key, _): &&(String, String)| key == "le")
            {
                Some((_, bound)) if parse_value(bound).is_some() => {}
                _ => return Err(self.error("histogram bucket without a numeric `le` label")),
            }
        }
        if kind == MetricType::Summary
            && suffix == Suffix::None
            && !labels.iter().any(|(key, value): &(String, String)| {
                key == "quantile" && parse_value(value).is_some()
            })
        {
            return Err(self.error("summary sample without a numeric `quantile` label"));
        }
        self.families[index].family.samples.push(Sample {
            suffix,
            labels,
            value,
            timestamp_ms,
        });
        Ok(())
    }

    /// Parses `name="value",...}` from `position` (after `{`); returns the
    /// position after `}`.
    fn labels(
        &self,
        line: &str,
        mut position: usize,
        labels: &mut Vec<(String, String)>,
    ) -> Result<usize, ParseError> {
        let bytes = line.as_bytes();
        loop {
            position = skip_blanks(bytes, position);
            match bytes.get(position) {
                Some(b'}') => return Ok(position + 1),
                None => return Err(self.error("unterminated label set")),
                _ => {}
            }
            let name_end = bytes[position..]
                .iter()
                .position(|&byte| !(byte.is_ascii_alphanumeric() || byte == b'_'))
                .map_or(bytes.len(), |offset| position + offset);
            let name = &line[position..name_end];
            if !is_label_name(name) {
                return Err(self.error("expected a label name"));
            }
            position = skip_blanks(bytes, name_end);
            if bytes.get(position) != Some(&b'=') {
                return Err(self.error(format!("expected `=` after label name `{name}`")));
            }
            position = skip_blanks(bytes, position + 1);
            if bytes.get(position) != Some(&b'"') {
                return Err(self.error(format!("expected `\"` to open the value of `{name}`")));
            }
            let (value, after) = self.label_value(line, position + 1)?;
            if labels.iter().any(|(existing, _)| existing == name) {
                return Err(self.error(format!("label `{name}` given twice")));
            }
            labels.push((name.to_string(), value));
            position = skip_blanks(bytes, after);
            match bytes.get(position) {
                Some(b',') => position += 1,
                Some(b'}') => return Ok(position + 1),
                _ => return Err(self.error("expected `,` or `}` after a label value")),
            }
        }
    }

    /// Parses a quoted value from `start` (after the opening quote); returns
    /// the unescaped value and the position after the closing quote.
    fn label_value(&self, line: &str, start: usize) -> Result<(String, usize), ParseError> {
        let bytes = line.as_bytes();
        let mut position = start;
        // Fast path: no escapes, one copy.
        while position < bytes.len() && bytes[position] != b'"' && bytes[position] != b'\\' {
            position += 1;
        }
        if bytes.get(position) == Some(&b'"') {
            return Ok((line[start..position].to_string(), position + 1));
        }
        let mut value = line[start..position].to_string();
        loop {
            match bytes.get(position) {
                None => return Err(self.error("unterminated label value")),
                Some(b'"') => return Ok((value, position + 1)),
                Some(b'\\') => {
                    match bytes.get(position + 1) {
                        Some(b'\\') => value.push('\\'),
                        Some(b'"') => value.push('"'),
                        Some(b'n') => value.push('\n'),
                        _ => return Err(self.error("invalid escape in a label value")),
                    }
                    position += 2;
                }
                Some(_) => {
                    // Copy up to the next quote or backslash (UTF-8 safe:
                    // both are ASCII, so never inside a multi-byte character).
                    let end = bytes[position..]
                        .iter()
                        .position(|&byte| byte == b'"' || byte == b'\\')
                        .map_or(bytes.len(), |offset| position + offset);
                    value.push_str(&line[position..end]);
                    position = end;
                }
            }
        }
    }

    /// Validates an OpenMetrics exemplar: ` {labels} value [timestamp]`.
    fn exemplar(&self, line: &str, position: usize) -> Result<(), ParseError> {
        let bytes = line.as_bytes();
        let mut position = skip_blanks(bytes, position);
        if bytes.get(position) != Some(&b'{') {
            return Err(self.error("expected `{` to open an exemplar's labels"));
        }
        let mut labels = Vec::new();
        position = skip_blanks(bytes, self.labels(line, position + 1, &mut labels)?);
        let end = token_end(bytes, position);
        if parse_value(&line[position..end]).is_none() {
            return Err(self.error("invalid exemplar value"));
        }
        position = skip_blanks(bytes, end);
        if position < bytes.len() {
            let end = token_end(bytes, position);
            if self.timestamp(&line[position..end]).is_none() || end < bytes.len() {
                return Err(self.error("invalid exemplar timestamp"));
            }
        }
        Ok(())
    }

    fn timestamp(&self, text: &str) -> Option<i64> {
        match self.format {
            Format::Text => text.parse().ok(),
            Format::OpenMetrics => {
                let seconds: f64 = text.parse().ok()?;
                seconds
                    .is_finite()
                    .then(|| (seconds * 1000.0).round() as i64)
            }
        }
    }

    fn finish(self) -> Result<Vec<Family>, ParseError> {
        Ok(self
            .families
            .into_iter()
            .filter(|builder| !builder.family.samples.is_empty())
            .map(|mut builder| {
                if builder.om_total {
                    builder.family.name.push_str("_total");
                }
                builder.family
            })
            .collect())
    }
}

fn skip_blanks(bytes: &[u8], mut position: usize) -> usize {
    while matches!(bytes.get(position), Some(b' ' | b'\t')) {
        position += 1;
    }
    position
}

fn token_end(bytes: &[u8], position: usize) -> usize {
    bytes[position..]
        .iter()
        .position(|&byte| byte == b' ' || byte == b'\t')
        .map_or(bytes.len(), |offset| position + offset)
}

/// Parses a sample value: decimal or exponent notation, `NaN`, `+Inf`, `-Inf`, `Inf`.
pub fn parse_value(text: &str) -> Option<f64> {
    match text {
        "" => None,
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            // Rust also accepts "infinity" and the like; Prometheus does not
            // name them, so only digits, signs, dots and exponents get here.
            if !text.bytes().all(|byte| {
                byte.is_ascii_digit() || matches!(byte, b'.' | b'-' | b'+' | b'e' | b'E')
            }) {
                return None;
            }
            text.parse().ok()
        }
    }
}

fn unescape_help(text: &str) -> String {
    if !text.contains('\\') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character == '\\' {
            match characters.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                // OpenMetrics escapes quotes in HELP too.
                Some('"') => out.push('"'),
                // Anything else is kept as written.
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(character);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(input: &str) -> Vec<Family> {
        parse(input, Format::Text).unwrap_or_else(|error| panic!("{error}\n{input}"))
    }

    fn open_metrics(input: &str) -> Vec<Family> {
        parse(input, Format::OpenMetrics).unwrap_or_else(|error| panic!("{error}\n{input}"))
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        let families = text("m{a=\"x\\\"y\\\\z\\nw\",b=\"ä{,}\"} 1\n");
        assert_eq!(
            families[0].samples[0].labels,
            labels(&[("a", "x\"y\\z\nw"), ("b", "ä{,}")])
        );
        let error = parse("m{a=\"x\\t\"} 1\n", Format::Text).expect_err("\\t is not an escape");
        assert_eq!(error.line, 1);
        assert!(error.message.contains("invalid escape"), "{error}");
    }

    #[test]
    fn nan_and_infinities_are_values() {
        let families = text(
            "# TYPE g gauge\ng{i=\"1\"} NaN\ng{i=\"2\"} +Inf\ng{i=\"3\"} -Inf\ng{i=\"4\"} -1.5e3\n",
        );
        let values: Vec<f64> = families[0].samples.iter().map(|s| s.value).collect();
        assert!(values[0].is_nan());
        assert_eq!(values[1..], [f64::INFINITY, f64::NEG_INFINITY, -1500.0]);
        assert!(parse("g infinity\n", Format::Text).is_err());
    }

    #[test]
    fn histograms_summaries_and_untyped_are_grouped_into_families() {
        let families = text(
            "# HELP h_seconds Latency.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{le=\"0.5\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n\
             h_seconds_sum 0.75\nh_seconds_count 2\n\
             # TYPE s summary\ns{quantile=\"0.9\"} 3\ns_sum 10\ns_count 4\n\
             u_thing 7\n# TYPE v untyped\nv 8\n",
        );
        let shape: Vec<(&str, MetricType, usize)> = families
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.samples.len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("h_seconds", MetricType::Histogram, 4),
                ("s", MetricType::Summary, 3),
                ("u_thing", MetricType::Untyped, 1),
                ("v", MetricType::Untyped, 1),
            ]
        );
        let suffixes: Vec<Suffix> = families[0].samples.iter().map(|s| s.suffix).collect();
        assert_eq!(
            suffixes,
            [Suffix::Bucket, Suffix::Bucket, Suffix::Sum, Suffix::Count]
        );
        assert_eq!(families[0].help.as_deref(), Some("Latency."));
        assert_eq!(families[1].samples[0].label("quantile"), Some("0.9"));
        let error = parse("# TYPE h histogram\nh_bucket 1\n", Format::Text).expect_err("no le");
        assert!(error.message.contains("`le`"), "{error}");
    }

    #[test]
    fn help_and_type_may_come_in_either_order_but_only_once_and_before_samples() {
        let families = text("# TYPE c_total counter\n# HELP c_total Things.\nc_total 1\n");
        assert_eq!(families[0].kind, MetricType::Counter);
        assert_eq!(families[0].help.as_deref(), Some("Things."));
        for (input, line, expected) in [
            ("c 1\n# TYPE c counter\n", 2, "after its samples"),
            ("c 1\n# HELP c late\n", 2, "after its samples"),
            (
                "# TYPE c counter\n# TYPE c gauge\nc 1\n",
                2,
                "second # TYPE",
            ),
            ("# TYPE c countr\nc 1\n", 1, "unknown metric type"),
        ] {
            let error = parse(input, Format::Text).expect_err(input);
            assert_eq!(error.line, line, "{input}");
            assert!(error.message.contains(expected), "{input}: {error}");
        }
    }

    #[test]
    fn timestamps_are_milliseconds_in_text_and_seconds_in_openmetrics() {
        assert_eq!(
            text("m 1 1700000000123\n")[0].samples[0].timestamp_ms,
            Some(1_700_000_000_123)
        );
        assert_eq!(
            open_metrics("# TYPE m gauge\nm 1 1700000000.5\n# EOF\n")[0].samples[0].timestamp_ms,
            Some(1_700_000_000_500)
        );
        assert!(parse("m 1 soon\n", Format::Text).is_err());
    }

    #[test]
    fn openmetrics_counters_exemplars_created_and_eof() {
        let families = open_metrics(
            "# TYPE req counter\n# UNIT req requests\n# HELP req Requests.\n\
             req_total{code=\"200\"} 3 # {trace_id=\"abc\"} 1 1700000000.1\n\
             req_created{code=\"200\"} 1700000000\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{le=\"1.0\"} 1 # {trace_id=\"def\"} 0.3\n\
             lat_seconds_bucket{le=\"+Inf\"} 1\nlat_seconds_sum 0.3\nlat_seconds_count 1\n\
             # TYPE build info\nbuild_info{version=\"1\"} 1\n# EOF\n",
        );
        let shape: Vec<(&str, MetricType, usize)> = families
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.samples.len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("req_total", MetricType::Counter, 1),
                ("lat_seconds", MetricType::Histogram, 4),
                ("build_info", MetricType::Gauge, 1),
            ]
        );
        let error = parse("# TYPE m gauge\nm 1\n", Format::OpenMetrics).expect_err("no EOF");
        assert!(error.message.contains("# EOF"), "{error}");
        let error = parse("m 1\n# EOF\nm 2\n", Format::OpenMetrics).expect_err("after EOF");
        assert_eq!(error.line, 3);
        let error = parse("m 1 # {a=\"b\"} 1\n", Format::Text).expect_err("exemplar in text");
        assert!(
            error.message.contains("only valid in OpenMetrics"),
            "{error}"
        );
    }

    #[test]
    fn openmetrics_only_types_become_gauges_and_misplaced_samples_are_errors() {
        let families = open_metrics(
            "# TYPE queue gaugehistogram\n# HELP queue Waiting \\\\ \\\"now\\\".\n\
             queue_bucket{le=\"1\"} 2\nqueue_bucket{le=\"+Inf\"} 3\nqueue_gcount 3\nqueue_gsum 2.5\n\
             # TYPE state stateset\nstate{state=\"a\"} 1\nstate{state=\"b\"} 0\n\
             # TYPE mystery unknown\nmystery 4\n# EOF\n",
        );
        let shape: Vec<(&str, MetricType, usize, Option<&str>)> = families
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.samples.len(), f.help.as_deref()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (
                    "queue_bucket",
                    MetricType::Gauge,
                    2,
                    Some("Waiting \\ \"now\".")
                ),
                (
                    "queue_gcount",
                    MetricType::Gauge,
                    1,
                    Some("Waiting \\ \"now\".")
                ),
                (
                    "queue_gsum",
                    MetricType::Gauge,
                    1,
                    Some("Waiting \\ \"now\".")
                ),
                ("state", MetricType::Gauge, 2, None),
                ("mystery", MetricType::Untyped, 1, None),
            ]
        );
        let error = parse("# TYPE h histogram\nh 1\n", Format::Text).expect_err("bare h");
        assert_eq!(
            error.message,
            "a sample named `h` does not fit its histogram family"
        );
        let error = parse("# TYPE s summary\ns 1\n", Format::Text).expect_err("no quantile");
        assert!(error.message.contains("`quantile`"), "{error}");
    }

    #[test]
    fn garbage_is_a_clear_error_with_the_line() {
        let error = parse("<html>\n<body>oops</body>\n", Format::Text).expect_err("HTML");
        assert_eq!(error.line, 1);
        assert_eq!(
            error.to_string(),
            "line 1: expected a metric name (near `<html>`)"
        );
        for input in [
            "m{a=\"b\" 1\n",
            "m{a=\"b} 1\n",
            "m abc\n",
            "m{a=\"1\",a=\"2\"} 1\n",
            "m 1 2 3\n",
        ] {
            assert!(parse(input, Format::Text).is_err(), "{input}");
        }
    }

    #[test]
    fn the_app_exposition_round_trips_through_the_encoder() {
        let input = "# HELP h_seconds Latency.\n# TYPE h_seconds histogram\n\
                     h_seconds_bucket{route=\"/a\",le=\"0.5\"} 1\nh_seconds_bucket{route=\"/a\",le=\"+Inf\"} 2\n\
                     h_seconds_sum{route=\"/a\"} 0.75\nh_seconds_count{route=\"/a\"} 2\n\
                     # HELP c_total Things.\n# TYPE c_total counter\nc_total{s=\"a\\\"b\"} 3\n";
        assert_eq!(
            super::super::exposition::encode_to_string(&text(input)),
            input
        );
    }
}
