//! Aggregation rules (compiled from `aggregate.rules`) and the cardinality
//! guard (`aggregate.max_series`).
//!
//! A rule names one family and its declared type, so whether it can give a
//! correct result is decided at start-up: counters and histograms are only
//! ever summed (histogram buckets per `le`, with `_sum` and `_count`
//! alongside), gauges and untyped metrics need a declared function, and
//! summaries (whose quantiles cannot be combined) can only be dropped.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::Deserialize;

use super::exposition::{Family, MetricType, Sample, Suffix, is_label_name, is_metric_name};

/// One aggregation rule (`aggregate.rules[]`) as written; its type and
/// function are parsed into enums by serde, the rest is checked by
/// [`RuleSet::compile`] when the settings load.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// The metric family the rule applies to: an exact name (as exposed, so
    /// `todo_http_requests_total`), or a prefix ending in `*` (drop rules only).
    pub metric: String,
    /// The family's type as the app declares it (`counter`, `gauge`,
    /// `histogram`, `summary`, `untyped`): required to aggregate, so a rule
    /// that would produce an invalid result is rejected before any scrape.
    #[serde(rename = "type", default)]
    pub kind: Option<MetricType>,
    /// Remove the family entirely.
    #[serde(default)]
    pub drop: bool,
    /// Keep only these labels and aggregate the series that then coincide
    /// (PromQL's `sum by (...)`); a histogram must keep `le`.
    #[serde(default)]
    pub by: Option<Vec<String>>,
    /// Replace the `status` label (an HTTP status code) by `status_class`
    /// (`2xx`, `4xx`…) and aggregate the series that then coincide.
    #[serde(default)]
    pub collapse_status: bool,
    /// How coinciding series combine: `sum` (the only choice, and the
    /// default, for counters and histograms), or `sum`, `min`, `max`, `avg`
    /// for gauges and untyped metrics, which must declare one.
    #[serde(default)]
    pub function: Option<Function>,
}

/// A rule that cannot give a correct result, or that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {index} (`{metric}`): {problem}")]
pub struct RuleError {
    /// 1-based position in `aggregate.rules`.
    pub index: usize,
    /// The metric the rule names.
    pub metric: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// How coinciding series are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Function {
    /// The sum (counters and histograms: always).
    Sum,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The mean of the values.
    Avg,
}

/// A rule's `function` (the configuration names the key).
impl TryFrom<String> for Function {
    type Error = String;

    fn try_from(name: String) -> Result<Function, String> {
        Ok(match name.as_str() {
            "sum" => Function::Sum,
            "min" => Function::Min,
            "max" => Function::Max,
            "avg" => Function::Avg,
            _ => return Err(format!("`{name}` is not a function (sum, min, max or avg)")),
        })
    }
}

/// What a rule does to its family.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Remove the family.
    Drop,
    /// Rewrite the labels (collapse `status`, keep only `by`), then combine
    /// the series that coincide with `function`.
    Aggregate {
        kind: MetricType,
        by: Option<Vec<String>>,
        collapse_status: bool,
        function: Function,
    },
}

/// The compiled rules. Deserialized from the list of [`RuleSettings`] and
/// compiled at once, so the settings hold only rules that can work (parse,
/// don't validate); the error names the rule and what is wrong with it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Vec<RuleSettings>")]
pub struct RuleSet {
    exact: HashMap<String, Action>,
    /// Prefixes of the rules ending in `*` (drop only).
    prefixes: Vec<String>,
}

/// What applying the rules did, for logs and health.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Families passed through unaggregated, with the reason (a type that
    /// differs from the rule's, histogram series whose buckets differ).
    pub skipped: Vec<String>,
}

impl TryFrom<Vec<RuleSettings>> for RuleSet {
    type Error = RuleError;

    fn try_from(rules: Vec<RuleSettings>) -> Result<RuleSet, RuleError> {
        RuleSet::compile(&rules)
    }
}

impl RuleSet {
    /// Validates and compiles the rules; the error names the first rule
    /// that cannot work (positions from 1) and why.
    pub fn compile(rules: &[RuleSettings]) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::default();
        let mut seen = HashSet::new();
        for (position, rule) in rules.iter().enumerate() {
            let fail = |problem: String| RuleError {
                index: position + 1,
                metric: rule.metric.clone(),
                problem,
            };
            if !seen.insert(rule.metric.clone()) {
                return Err(fail(
                    "a second rule for the same metric; merge them".to_string(),
                ));
            }
            let action = compile_rule(rule).map_err(fail)?;
            set.add(&rule.metric, action);
        }
        Ok(set)
    }

    /// Files a compiled rule: a `prefix*` drop among the prefixes, any
    /// other rule under its exact name.
    fn add(&mut self, metric: &str, action: Action) {
        match (metric.strip_suffix('*'), &action) {
            (Some(prefix), Action::Drop) => self.prefixes.push(prefix.to_string()),
            _ => {
                self.exact.insert(metric.to_string(), action);
            }
        }
    }

    /// Whether there is no rule (the app's metrics pass through).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// The action for a family, if a rule names it.
    pub fn action(&self, name: &str) -> Option<&Action> {
        if let Some(action) = self.exact.get(name) {
            return Some(action);
        }
        self.prefixes
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()))
            .then_some(&Action::Drop)
    }

    /// Applies the rules to the families of one scrape.
    pub fn apply(&self, families: Vec<Family>) -> (Vec<Family>, Outcome) {
        let mut outcome = Outcome::default();
        let mut out = Vec::with_capacity(families.len());
        for family in families {
            match self.action(&family.name) {
                None => out.push(family),
                Some(Action::Drop) => {}
                Some(Action::Aggregate {
                    kind,
                    by,
                    collapse_status,
                    function,
                }) => {
                    if family.kind != *kind {
                        outcome.skipped.push(format!(
                            "{}: the rule says {} but the app exposes a {}; passed through unaggregated",
                            family.name,
                            kind.as_str(),
                            family.kind.as_str()
                        ));
                        out.push(family);
                        continue;
                    }
                    match aggregate(&family, by.as_deref(), *collapse_status, *function) {
                        Ok(aggregated) => out.push(aggregated),
                        Err(reason) => {
                            outcome.skipped.push(format!(
                                "{}: {reason}; passed through unaggregated",
                                family.name
                            ));
                            out.push(family);
                        }
                    }
                }
            }
        }
        (out, outcome)
    }
}

/// One rule's action, or what is wrong with it.
fn compile_rule(rule: &RuleSettings) -> Result<Action, String> {
    check_metric(rule)?;
    if rule.drop {
        if rule.by.is_some() || rule.collapse_status || rule.function.is_some() {
            return Err(
                "`drop` cannot be combined with `by`, `collapse_status` or `function`".to_string(),
            );
        }
        return Ok(Action::Drop);
    }
    if rule.by.is_none() && !rule.collapse_status {
        return Err(
            "does nothing: give `drop: true`, `by: [labels]` or `collapse_status: true`"
                .to_string(),
        );
    }
    let kind = rule.kind.ok_or_else(|| {
        "`type` is required to aggregate (counter, gauge, histogram, summary or untyped)"
            .to_string()
    })?;
    let function = function_for(kind, rule.function)?;
    if let Some(by) = &rule.by {
        check_by(by, kind, rule.collapse_status)?;
    }
    Ok(Action::Aggregate {
        kind,
        by: rule.by.clone(),
        collapse_status: rule.collapse_status,
        function,
    })
}

/// The rule's `metric`: a metric name, or a prefix ending in `*` (drop rules only).
fn check_metric(rule: &RuleSettings) -> Result<(), String> {
    if let Some(prefix) = rule.metric.strip_suffix('*') {
        if !rule.drop {
            return Err("a prefix (`name*`) can only be used to drop".to_string());
        }
        if !(prefix.is_empty() || is_metric_name(prefix)) || prefix.contains('*') {
            return Err("not a metric name followed by `*`".to_string());
        }
    } else if !is_metric_name(&rule.metric) {
        return Err("not a metric name".to_string());
    }
    Ok(())
}

/// The function that combines series of this type: counters and histograms
/// are only summed, gauges and untyped metrics must declare one, summaries
/// cannot be combined at all.
fn function_for(kind: MetricType, declared: Option<Function>) -> Result<Function, String> {
    match kind {
        MetricType::Summary => Err(
            "a summary cannot be aggregated (quantiles do not add up); drop it, or have the app expose a histogram"
                .to_string(),
        ),
        MetricType::Counter | MetricType::Histogram => match declared {
            None | Some(Function::Sum) => Ok(Function::Sum),
            Some(_) => Err(
                "counters and histograms can only be summed (`function: sum` or none)".to_string(),
            ),
        },
        MetricType::Gauge | MetricType::Untyped => declared.ok_or_else(|| {
            "a gauge (or untyped metric) has no natural aggregate: declare `function` (sum, min, max or avg)"
                .to_string()
        }),
    }
}

/// The labels kept: label names; `le` for a histogram; with
/// `collapse_status`, `status_class` and not `status`.
fn check_by(by: &[String], kind: MetricType, collapse_status: bool) -> Result<(), String> {
    for label in by {
        if !is_label_name(label) || label.starts_with("__") {
            return Err(format!("`{label}` in `by` is not a label name"));
        }
    }
    let keeps = |name: &str| by.iter().any(|label| label == name);
    if kind == MetricType::Histogram && !keeps("le") {
        return Err(
            "`by` must keep `le` for a histogram: summing buckets of different bounds gives a meaningless histogram"
                .to_string(),
        );
    }
    if collapse_status {
        if keeps("status") {
            return Err(
                "`by` keeps `status`, which `collapse_status` replaces by `status_class`"
                    .to_string(),
            );
        }
        if !keeps("status_class") {
            return Err(
                "`collapse_status` with a `by` that does not keep `status_class` does nothing; remove one"
                    .to_string(),
            );
        }
    }
    Ok(())
}

/// `2xx` for `200`; `other` for anything that is not a status code.
pub fn status_class(status: &str) -> String {
    let bytes = status.as_bytes();
    if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_digit) && (b'1'..=b'5').contains(&bytes[0])
    {
        format!("{}xx", bytes[0] as char)
    } else {
        "other".to_string()
    }
}

/// A bucket bound, ordered numerically (`+Inf` last).
#[derive(Debug, Clone, Copy)]
struct Bound(f64);

impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Bound {}
impl Hash for Bound {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal under total_cmp exactly when the bits are equal.
        self.0.to_bits().hash(state);
    }
}
impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bound {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A label set.
type Labels = Vec<(String, String)>;

/// Output series key: the labels kept (without `le`), then the line.
type Key = (Labels, Suffix, Option<Bound>);

/// What the series that coincide in one output series add up to.
struct Accumulator {
    sum: f64,
    min: f64,
    max: f64,
    count: u32,
    /// The `le` text as first seen, to expose it unchanged.
    le: Option<String>,
}

impl Accumulator {
    fn new(le: Option<String>) -> Accumulator {
        Accumulator {
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            count: 0,
            le,
        }
    }

    fn add(&mut self, value: f64) {
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.count += 1;
    }

    fn value(&self, function: Function) -> f64 {
        match function {
            Function::Sum => self.sum,
            Function::Min => self.min,
            Function::Max => self.max,
            Function::Avg => self.sum / f64::from(self.count),
        }
    }
}

/// Rewrites one family's series (`collapse_status`, then `by`) and combines
/// those that coincide.
fn aggregate(
    family: &Family,
    by: Option<&[String]>,
    collapse_status: bool,
    function: Function,
) -> Result<Family, String> {
    let mut groups = Groups::default();
    for sample in &family.samples {
        groups.add(family.kind, sample, by, collapse_status);
    }
    if family.kind == MetricType::Histogram {
        groups.check_same_buckets()?;
    }
    Ok(Family {
        name: family.name.clone(),
        help: family.help.clone(),
        kind: family.kind,
        samples: groups.into_samples(function),
    })
}

/// One family's series as they are combined.
#[derive(Default)]
struct Groups {
    /// Output series → what its source series add up to.
    accumulators: HashMap<Key, Accumulator>,
    /// Histogram series that are summed together must have the same buckets,
    /// or the sums per `le` are not cumulative counts of anything.
    /// Source series (hash of its labels without `le`) → (output group, its bounds).
    layouts: HashMap<u64, (Labels, Vec<Bound>)>,
}

impl Groups {
    /// Adds one sample to its output series.
    fn add(
        &mut self,
        kind: MetricType,
        sample: &Sample,
        by: Option<&[String]>,
        collapse_status: bool,
    ) {
        let (labels, le) = output_labels(sample, by, collapse_status);
        let bound = le.as_deref().and_then(super::parse::parse_value).map(Bound);
        if kind == MetricType::Histogram && sample.suffix == Suffix::Bucket {
            self.record_bucket(sample, &labels, bound);
        }
        self.accumulators
            .entry((labels, sample.suffix, bound))
            .or_insert(Accumulator::new(le))
            .add(sample.value);
    }

    /// Notes a bucket's bound under its source series.
    fn record_bucket(&mut self, sample: &Sample, group: &Labels, bound: Option<Bound>) {
        // A hash identifies the source series without copying its labels; a
        // collision could only make two series look like one with odd
        // buckets, i.e. pass the family through, never mis-sum.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for pair in sample.labels.iter().filter(|(name, _)| name != "le") {
            pair.hash(&mut hasher);
        }
        let entry = self
            .layouts
            .entry(hasher.finish())
            .or_insert_with(|| (group.clone(), Vec::new()));
        entry.1.push(bound.unwrap_or(Bound(f64::NAN)));
    }

    /// Whether the histogram series summed into each output series all have
    /// the same bucket bounds.
    fn check_same_buckets(&mut self) -> Result<(), String> {
        let mut by_group: HashMap<&Labels, Vec<Bound>> = HashMap::new();
        for (group, bounds) in self.layouts.values_mut() {
            bounds.sort();
            match by_group.get(group) {
                Some(first) if first != bounds => {
                    return Err("series summed together have different buckets".to_string());
                }
                Some(_) => {}
                None => {
                    by_group.insert(group, bounds.clone());
                }
            }
        }
        Ok(())
    }

    /// The combined samples, sorted: series by labels, each histogram's
    /// buckets by bound then `_sum` and `_count`; the same order at every scrape.
    fn into_samples(self, function: Function) -> Vec<Sample> {
        let mut groups: Vec<(Key, Accumulator)> = self.accumulators.into_iter().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        groups
            .into_iter()
            .map(|((mut labels, suffix, _), accumulator)| {
                let value = accumulator.value(function);
                if let Some(le) = accumulator.le {
                    labels.push(("le".to_string(), le));
                }
                Sample {
                    suffix,
                    labels,
                    value,
                    // A combination of series has no single time of observation.
                    timestamp_ms: None,
                }
            })
            .collect()
    }
}

/// A sample's labels as the rule rewrites them (sorted, `status` collapsed
/// into `status_class`, only those in `by` kept), and its `le` apart.
fn output_labels(
    sample: &Sample,
    by: Option<&[String]>,
    collapse_status: bool,
) -> (Labels, Option<String>) {
    let mut le = None;
    let mut labels: Labels = Vec::with_capacity(sample.labels.len());
    for (name, value) in &sample.labels {
        if name == "le" && sample.suffix == Suffix::Bucket {
            le = Some(value.clone());
            continue;
        }
        let collapse = collapse_status && name == "status";
        let output_name = if collapse { "status_class" } else { name };
        // Decide before copying: most labels are summed away.
        if by.is_some_and(|by| !by.iter().any(|kept| kept == output_name)) {
            continue;
        }
        let value = if collapse {
            status_class(value)
        } else {
            value.clone()
        };
        labels.push((output_name.to_string(), value));
    }
    labels.sort();
    (labels, le)
}

/// Keeps at most `max_series` samples, dropping whole histogram and summary
/// series (all their buckets or quantiles, `_sum` and `_count`) so what is
/// left is always valid. Small families are kept first: when one family's
/// labels explode, it is that family that loses series, not the others.
/// Returns the number of samples dropped.
pub fn limit_series(families: &mut [Family], max_series: usize) -> usize {
    let total: usize = families.iter().map(|family| family.samples.len()).sum();
    if total <= max_series {
        return 0;
    }
    let mut order: Vec<usize> = (0..families.len()).collect();
    order.sort_by_key(|&index| families[index].samples.len());
    let mut room = max_series;
    let mut dropped = 0;
    for index in order {
        let family = &mut families[index];
        if family.samples.len() <= room {
            room -= family.samples.len();
            continue;
        }
        let grouped = matches!(family.kind, MetricType::Histogram | MetricType::Summary);
        // Units: the samples of one series (one label set without le/quantile).
        let mut units: Vec<Vec<usize>> = Vec::new();
        let mut unit_of: HashMap<Labels, usize> = HashMap::new();
        for (position, sample) in family.samples.iter().enumerate() {
            if !grouped {
                units.push(vec![position]);
                continue;
            }
            let key: Labels = sample
                .labels
                .iter()
                .filter(|(name, _)| name != "le" && name != "quantile")
                .cloned()
                .collect();
            match unit_of.get(&key) {
                Some(&unit) => units[unit].push(position),
                None => {
                    unit_of.insert(key, units.len());
                    units.push(vec![position]);
                }
            }
        }
        let mut keep = vec![false; family.samples.len()];
        for positions in &units {
            if positions.len() <= room {
                room -= positions.len();
                for &position in positions {
                    keep[position] = true;
                }
            } else {
                dropped += positions.len();
            }
        }
        let mut flags = keep.into_iter();
        family
            .samples
            .retain(|_| flags.next().expect("one flag per sample"));
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::exposition::encode_to_string;
    use crate::aggregate::parse::{Format, parse};

    fn rule(metric: &str, kind: Option<&str>) -> RuleSettings {
        RuleSettings {
            metric: metric.to_string(),
            kind: kind.map(|name| MetricType::from_name(name).expect("a type name")),
            drop: false,
            by: None,
            collapse_status: false,
            function: None,
        }
    }

    fn by(labels: &[&str]) -> Option<Vec<String>> {
        Some(labels.iter().map(|label| label.to_string()).collect())
    }

    fn apply(rules: &[RuleSettings], input: &str) -> (String, Outcome) {
        let set = RuleSet::compile(rules).expect("valid rules");
        let (families, outcome) = set.apply(parse(input, Format::Text).expect("valid input"));
        (encode_to_string(&families), outcome)
    }

    const REQUESTS: &str = "# HELP todo_http_requests_total Requests.\n# TYPE todo_http_requests_total counter\n\
        todo_http_requests_total{method=\"GET\",route=\"/api/todos\",status=\"200\"} 10\n\
        todo_http_requests_total{method=\"GET\",route=\"/api/todos\",status=\"204\"} 3\n\
        todo_http_requests_total{method=\"GET\",route=\"/api/todos\",status=\"404\"} 2\n\
        todo_http_requests_total{method=\"POST\",route=\"/api/todos\",status=\"201\"} 5\n\
        todo_http_requests_total{method=\"GET\",route=\"/api/todos/{id}\",status=\"200\"} 7\n\
        todo_http_requests_total{method=\"GET\",route=\"/api/todos/{id}\",status=\"500\"} 1\n";

    #[test]
    fn counters_collapse_status_into_status_class_and_sum() {
        let mut collapse = rule("todo_http_requests_total", Some("counter"));
        collapse.collapse_status = true;
        let (text, outcome) = apply(&[collapse], REQUESTS);
        assert_eq!(outcome, Outcome::default());
        assert_eq!(
            text,
            "# HELP todo_http_requests_total Requests.\n# TYPE todo_http_requests_total counter\n\
             todo_http_requests_total{method=\"GET\",route=\"/api/todos\",status_class=\"2xx\"} 13\n\
             todo_http_requests_total{method=\"GET\",route=\"/api/todos\",status_class=\"4xx\"} 2\n\
             todo_http_requests_total{method=\"GET\",route=\"/api/todos/{id}\",status_class=\"2xx\"} 7\n\
             todo_http_requests_total{method=\"GET\",route=\"/api/todos/{id}\",status_class=\"5xx\"} 1\n\
             todo_http_requests_total{method=\"POST\",route=\"/api/todos\",status_class=\"2xx\"} 5\n"
        );
    }

    #[test]
    fn counters_sum_by_the_labels_kept() {
        let mut by_route = rule("todo_http_requests_total", Some("counter"));
        by_route.by = by(&["route"]);
        let (text, _) = apply(&[by_route], REQUESTS);
        assert_eq!(
            text,
            "# HELP todo_http_requests_total Requests.\n# TYPE todo_http_requests_total counter\n\
             todo_http_requests_total{route=\"/api/todos\"} 20\n\
             todo_http_requests_total{route=\"/api/todos/{id}\"} 8\n"
        );
    }

    const LATENCY: &str = "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
        lat_seconds_bucket{method=\"GET\",route=\"/a\",le=\"0.1\"} 1\n\
        lat_seconds_bucket{method=\"GET\",route=\"/a\",le=\"0.5\"} 3\n\
        lat_seconds_bucket{method=\"GET\",route=\"/a\",le=\"+Inf\"} 4\n\
        lat_seconds_sum{method=\"GET\",route=\"/a\"} 1.25\n\
        lat_seconds_count{method=\"GET\",route=\"/a\"} 4\n\
        lat_seconds_bucket{method=\"POST\",route=\"/a\",le=\"0.1\"} 0\n\
        lat_seconds_bucket{method=\"POST\",route=\"/a\",le=\"0.5\"} 2\n\
        lat_seconds_bucket{method=\"POST\",route=\"/a\",le=\"+Inf\"} 5\n\
        lat_seconds_sum{method=\"POST\",route=\"/a\"} 3.5\n\
        lat_seconds_count{method=\"POST\",route=\"/a\"} 5\n\
        lat_seconds_bucket{method=\"GET\",route=\"/b\",le=\"0.1\"} 2\n\
        lat_seconds_bucket{method=\"GET\",route=\"/b\",le=\"0.5\"} 2\n\
        lat_seconds_bucket{method=\"GET\",route=\"/b\",le=\"+Inf\"} 2\n\
        lat_seconds_sum{method=\"GET\",route=\"/b\"} 0.125\n\
        lat_seconds_count{method=\"GET\",route=\"/b\"} 2\n";

    #[test]
    fn histograms_sum_buckets_per_le_with_sum_and_count() {
        let mut by_route = rule("lat_seconds", Some("histogram"));
        by_route.by = by(&["route", "le"]);
        let (text, outcome) = apply(&[by_route], LATENCY);
        assert_eq!(outcome, Outcome::default());
        // /a: buckets 1+0, 3+2, 4+5; sum 1.25+3.5; count 4+5. /b unchanged.
        assert_eq!(
            text,
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\n\
             lat_seconds_bucket{route=\"/a\",le=\"0.5\"} 5\n\
             lat_seconds_bucket{route=\"/a\",le=\"+Inf\"} 9\n\
             lat_seconds_sum{route=\"/a\"} 4.75\n\
             lat_seconds_count{route=\"/a\"} 9\n\
             lat_seconds_bucket{route=\"/b\",le=\"0.1\"} 2\n\
             lat_seconds_bucket{route=\"/b\",le=\"0.5\"} 2\n\
             lat_seconds_bucket{route=\"/b\",le=\"+Inf\"} 2\n\
             lat_seconds_sum{route=\"/b\"} 0.125\n\
             lat_seconds_count{route=\"/b\"} 2\n"
        );
    }

    #[test]
    fn histograms_with_different_buckets_pass_through_unaggregated() {
        let input = "# TYPE lat_seconds histogram\n\
            lat_seconds_bucket{m=\"GET\",le=\"0.1\"} 1\nlat_seconds_bucket{m=\"GET\",le=\"+Inf\"} 1\n\
            lat_seconds_sum{m=\"GET\"} 0.05\nlat_seconds_count{m=\"GET\"} 1\n\
            lat_seconds_bucket{m=\"PUT\",le=\"0.2\"} 1\nlat_seconds_bucket{m=\"PUT\",le=\"+Inf\"} 1\n\
            lat_seconds_sum{m=\"PUT\"} 0.15\nlat_seconds_count{m=\"PUT\"} 1\n";
        let mut all = rule("lat_seconds", Some("histogram"));
        all.by = by(&["le"]);
        let (text, outcome) = apply(&[all], input);
        assert_eq!(text, input);
        assert_eq!(outcome.skipped.len(), 1);
        assert!(
            outcome.skipped[0].contains("different buckets"),
            "{outcome:?}"
        );
    }

    #[test]
    fn gauges_combine_with_their_declared_function_and_drop_rules_remove() {
        let input = "# TYPE pool gauge\npool{state=\"idle\",w=\"1\"} 2\npool{state=\"idle\",w=\"2\"} 6\n\
                     pool{state=\"active\",w=\"1\"} 1\n# TYPE go_threads gauge\ngo_threads 9\n\
                     # TYPE go_goroutines gauge\ngo_goroutines 3\n";
        for (function, idle, active) in [
            ("max", "6", "1"),
            ("avg", "4", "1"),
            ("min", "2", "1"),
            ("sum", "8", "1"),
        ] {
            let mut pool = rule("pool", Some("gauge"));
            pool.by = by(&["state"]);
            pool.function = Some(match function {
                "max" => Function::Max,
                "avg" => Function::Avg,
                "min" => Function::Min,
                _ => Function::Sum,
            });
            let mut go = rule("go_*", None);
            go.drop = true;
            let (text, _) = apply(&[pool, go], input);
            assert_eq!(
                text,
                format!(
                    "# TYPE pool gauge\npool{{state=\"active\"}} {active}\npool{{state=\"idle\"}} {idle}\n"
                ),
                "{function}"
            );
        }
    }

    #[test]
    fn a_rule_whose_type_differs_from_the_scrape_is_not_applied() {
        let mut wrong = rule("todo_http_requests_total", Some("gauge"));
        wrong.by = by(&["route"]);
        wrong.function = Some(Function::Sum);
        let (text, outcome) = apply(&[wrong], REQUESTS);
        assert_eq!(text, REQUESTS);
        assert!(
            outcome.skipped[0].contains("the rule says gauge"),
            "{outcome:?}"
        );
    }

    #[test]
    fn invalid_rules_are_rejected_with_the_reason() {
        let mut gauge = rule("todo_db_pool_connections", Some("gauge"));
        gauge.by = by(&["state"]);
        let mut histogram = rule("lat_seconds", Some("histogram"));
        histogram.by = by(&["route"]);
        let mut summary = rule("rpc_seconds", Some("summary"));
        summary.by = by(&["route"]);
        let mut max_counter = rule("c_total", Some("counter"));
        max_counter.by = by(&["route"]);
        max_counter.function = Some(Function::Max);
        let mut untyped_type = rule("c_total", None);
        untyped_type.by = by(&["route"]);
        let mut prefix = rule("go_*", Some("gauge"));
        prefix.by = by(&["x"]);
        prefix.function = Some(Function::Sum);
        let mut keeps_status = rule("c_total", Some("counter"));
        keeps_status.collapse_status = true;
        keeps_status.by = by(&["status"]);
        let mut drop_and_by = rule("c_total", None);
        drop_and_by.drop = true;
        drop_and_by.by = by(&["x"]);
        for (rules, expected) in [
            (
                vec![gauge],
                "rule 1 (`todo_db_pool_connections`): a gauge (or untyped metric) has no natural aggregate: declare `function`",
            ),
            (
                vec![histogram],
                "rule 1 (`lat_seconds`): `by` must keep `le` for a histogram",
            ),
            (
                vec![summary],
                "rule 1 (`rpc_seconds`): a summary cannot be aggregated",
            ),
            (
                vec![max_counter],
                "counters and histograms can only be summed",
            ),
            (vec![untyped_type], "`type` is required to aggregate"),
            (vec![prefix], "a prefix (`name*`) can only be used to drop"),
            (vec![keeps_status], "`by` keeps `status`"),
            (vec![drop_and_by], "`drop` cannot be combined"),
            (vec![rule("c_total", Some("counter"))], "does nothing"),
        ] {
            let error = RuleSet::compile(&rules).expect_err(expected).to_string();
            assert!(
                error.starts_with(expected) || error.contains(expected),
                "{error}"
            );
        }
        let mut first = rule("x", None);
        first.drop = true;
        let error = RuleSet::compile(&[first.clone(), first]).expect_err("twice");
        assert_eq!(error.index, 2);
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class("200"), "2xx");
        assert_eq!(status_class("503"), "5xx");
        assert_eq!(status_class("600"), "other");
        assert_eq!(status_class("20"), "other");
    }

    #[test]
    fn the_guard_keeps_small_families_and_whole_histogram_series() {
        // 5 counter series, and 3 histogram series of 5 lines (3 buckets, sum, count).
        let mut input = String::from("# TYPE c_total counter\n");
        for index in 0..5 {
            input.push_str(&format!("c_total{{i=\"{index}\"}} {index}\n"));
        }
        input.push_str("# TYPE h histogram\n");
        for route in ["a", "b", "c"] {
            for le in ["0.1", "1", "+Inf"] {
                input.push_str(&format!("h_bucket{{r=\"{route}\",le=\"{le}\"}} 1\n"));
            }
            input.push_str(&format!(
                "h_sum{{r=\"{route}\"}} 0.5\nh_count{{r=\"{route}\"}} 1\n"
            ));
        }
        let mut families = parse(&input, Format::Text).expect("valid");
        // Room for 12: the 5 counters, then one histogram series (5); the
        // next (5) does not fit in the 2 left, nor the last.
        let dropped = limit_series(&mut families, 12);
        assert_eq!(dropped, 10);
        assert_eq!(families[0].samples.len(), 5);
        assert_eq!(families[1].samples.len(), 5);
        assert!(
            families[1]
                .samples
                .iter()
                .all(|s| s.label("r") == Some("a"))
        );
        assert_eq!(limit_series(&mut families, 12), 0);
    }
}
