//! The in-memory model of a metrics exposition (families of samples) and its
//! encoding in the Prometheus text format 0.0.4, which is what the sidecar
//! serves: the parser fills the model, the rules and the guard reshape it.

use std::fmt::Write;

/// A metric family's type, after OpenMetrics-only types have been mapped to
/// the text format's (see `parse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum MetricType {
    /// Only goes up (resets on restart); summed when aggregated.
    Counter,
    /// Goes up and down; aggregated only with a declared function.
    Gauge,
    /// Cumulative `_bucket` lines per `le`, with `_sum` and `_count`.
    Histogram,
    /// Quantiles with `_sum` and `_count`; never aggregated.
    Summary,
    /// No `# TYPE` (or OpenMetrics `unknown`); treated like a gauge.
    Untyped,
}

/// A rule's `type` (the configuration names the key).
impl TryFrom<String> for MetricType {
    type Error = String;

    fn try_from(name: String) -> Result<MetricType, String> {
        MetricType::from_name(&name).ok_or_else(|| {
            format!("`{name}` is not a metric type (counter, gauge, histogram, summary or untyped)")
        })
    }
}

impl MetricType {
    /// The name used on a `# TYPE` line (and in the rules).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }

    /// Parses a type name of the text format or the rules.
    pub fn from_name(name: &str) -> Option<MetricType> {
        Some(match name {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            _ => return None,
        })
    }
}

/// Which line of its family a sample is: the family name plus this suffix
/// is the sample's metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Suffix {
    /// The family name itself (a counter, gauge, untyped value or a quantile).
    None,
    /// `_bucket` of a histogram.
    Bucket,
    /// `_sum` of a histogram or summary.
    Sum,
    /// `_count` of a histogram or summary.
    Count,
}

impl Suffix {
    /// The text appended to the family name.
    pub fn as_str(self) -> &'static str {
        match self {
            Suffix::None => "",
            Suffix::Bucket => "_bucket",
            Suffix::Sum => "_sum",
            Suffix::Count => "_count",
        }
    }
}

/// One sample: a series (name and labels) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Which line of the family.
    pub suffix: Suffix,
    /// Label pairs in exposition order (`le` and `quantile` included).
    pub labels: Vec<(String, String)>,
    /// The value; NaN and ±Inf are legal.
    pub value: f64,
    /// Milliseconds since the epoch, when the exposition gave one.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A metric family: name, help, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name (`todo_http_requests_total`, `todo_http_request_duration_seconds`).
    pub name: String,
    /// The `# HELP` text, unescaped.
    pub help: Option<String>,
    /// The declared type (untyped when none was declared).
    pub kind: MetricType,
    /// The samples, in exposition order.
    pub samples: Vec<Sample>,
}

impl Family {
    /// An empty family.
    pub fn new(name: impl Into<String>, kind: MetricType) -> Family {
        Family {
            name: name.into(),
            help: None,
            kind,
            samples: Vec::new(),
        }
    }
}

/// Whether `name` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':')
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// Formats a value as the text format does (`+Inf`, `-Inf`, `NaN`).
pub fn format_value(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // Rust's shortest round-trip representation, never in exponent form.
        let _ = write!(out, "{value}");
    }
}

fn escape_label_value(value: &str, out: &mut String) {
    for character in value.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

fn escape_help(help: &str, out: &mut String) {
    for character in help.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

/// Encodes families in the text format 0.0.4. Families without samples are
/// left out: an empty family says nothing and promtool would flag it.
pub fn encode(families: &[Family], out: &mut String) {
    for family in families.iter().filter(|family| !family.samples.is_empty()) {
        if let Some(help) = &family.help {
            out.push_str("# HELP ");
            out.push_str(&family.name);
            out.push(' ');
            escape_help(help, out);
            out.push('\n');
        }
        out.push_str("# TYPE ");
        out.push_str(&family.name);
        out.push(' ');
        out.push_str(family.kind.as_str());
        out.push('\n');
        for sample in &family.samples {
            out.push_str(&family.name);
            out.push_str(sample.suffix.as_str());
            if !sample.labels.is_empty() {
                out.push('{');
                for (index, (name, value)) in sample.labels.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(name);
                    out.push_str("=\"");
                    escape_label_value(value, out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            format_value(sample.value, out);
            if let Some(timestamp) = sample.timestamp_ms {
                let _ = write!(out, " {timestamp}");
            }
            out.push('\n');
        }
    }
}

/// Encodes families into a new string.
pub fn encode_to_string(families: &[Family]) -> String {
    let mut out = String::with_capacity(families.iter().map(|f| f.samples.len() * 96).sum());
    encode(families, &mut out);
    out
}

/// Number of series (sample lines) in `families`.
pub fn series_count(families: &[Family]) -> usize {
    families.iter().map(|family| family.samples.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_escapes_labels_and_help_and_spells_special_values() {
        let mut family = Family::new("x_total", MetricType::Counter);
        family.help = Some("a \\ b\nc".to_string());
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0, 0.25] {
            family.samples.push(Sample {
                suffix: Suffix::None,
                labels: vec![("path".to_string(), "a\"b\\c\nd".to_string())],
                value,
                timestamp_ms: None,
            });
        }
        let text = encode_to_string(&[family]);
        assert_eq!(
            text,
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\n\
             x_total{path=\"a\\\"b\\\\c\\nd\"} NaN\n\
             x_total{path=\"a\\\"b\\\\c\\nd\"} +Inf\n\
             x_total{path=\"a\\\"b\\\\c\\nd\"} -Inf\n\
             x_total{path=\"a\\\"b\\\\c\\nd\"} 1\n\
             x_total{path=\"a\\\"b\\\\c\\nd\"} 0.25\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(is_metric_name("todo_app:up_1"));
        assert!(!is_metric_name("1todo"));
        assert!(is_label_name("_le"));
        assert!(!is_label_name("a:b"));
    }
}
