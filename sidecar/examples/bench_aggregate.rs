//! Benchmark of one aggregation pass (parse, rules, cardinality guard, encode)
//! over a generated exposition shaped like todo-app's: counters with
//! method/route/status, latency histograms, gauges, a summary, untyped lines.
//! Run by scripts/bench-aggregate.sh, which also measures peak memory.
//!
//! Usage: bench_aggregate [SERIES] [RUNS]; prints one `key=value` per line.

use std::time::Instant;

use todo_sidecar::aggregate::config::RuleSettings;
use todo_sidecar::aggregate::exposition::MetricType;
use todo_sidecar::aggregate::exposition::{encode_to_string, series_count};
use todo_sidecar::aggregate::parse::{Format, parse};
use todo_sidecar::aggregate::rules::{Function, RuleSet, limit_series};

const ROUTES: [&str; 8] = [
    "/api/todos",
    "/api/todos/{id}",
    "/api/openapi.json",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/api/v2/todos",
    "unmatched",
];
const METHODS: [&str; 5] = ["GET", "POST", "PATCH", "DELETE", "PUT"];
const STATUSES: [&str; 10] = [
    "200", "201", "204", "400", "401", "404", "409", "422", "429", "503",
];
const BUCKETS: [&str; 15] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "+Inf",
];

/// About `series` sample lines: 40 % counters, 45 % histogram lines, 10 %
/// gauges, the rest a summary and untyped lines. `pod` labels give the
/// cardinality that real multi-tenant expositions have.
fn exposition(series: usize) -> String {
    let mut text = String::with_capacity(series * 110);
    let mut written = 0;
    text.push_str("# HELP todo_http_requests_total API requests answered, by method, matched route pattern and status code.\n# TYPE todo_http_requests_total counter\n");
    let counters = series * 40 / 100;
    'counters: for shard in 0.. {
        for route in ROUTES {
            for method in METHODS {
                for status in STATUSES {
                    if written >= counters {
                        break 'counters;
                    }
                    text.push_str(&format!(
                        "todo_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\",shard=\"{shard}\"}} {}\n",
                        written * 7 + 3
                    ));
                    written += 1;
                }
            }
        }
    }
    text.push_str("# HELP todo_http_request_duration_seconds Time from receiving an API request to its response, by method and route.\n# TYPE todo_http_request_duration_seconds histogram\n");
    let histogram_lines = series * 45 / 100;
    let mut lines = 0;
    'histograms: for shard in 0.. {
        for route in ROUTES {
            for method in METHODS {
                if lines + BUCKETS.len() + 2 > histogram_lines {
                    break 'histograms;
                }
                for (index, le) in BUCKETS.iter().enumerate() {
                    text.push_str(&format!(
                        "todo_http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",shard=\"{shard}\",le=\"{le}\"}} {}\n",
                        index * 3
                    ));
                }
                text.push_str(&format!(
                    "todo_http_request_duration_seconds_sum{{method=\"{method}\",route=\"{route}\",shard=\"{shard}\"}} 12.5\n\
                     todo_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\",shard=\"{shard}\"}} 42\n"
                ));
                lines += BUCKETS.len() + 2;
            }
        }
    }
    written += lines;
    text.push_str("# HELP todo_db_pool_connections Connections in the database pool, by state (idle or active).\n# TYPE todo_db_pool_connections gauge\n");
    let gauges = series * 10 / 100;
    for index in 0..gauges {
        let state = if index % 2 == 0 { "idle" } else { "active" };
        text.push_str(&format!(
            "todo_db_pool_connections{{state=\"{state}\",worker=\"{index}\"}} {}\n",
            index % 13
        ));
    }
    written += gauges;
    text.push_str(
        "# HELP rpc_duration_seconds RPC latency.\n# TYPE rpc_duration_seconds summary\n",
    );
    for quantile in ["0.5", "0.9", "0.99"] {
        text.push_str(&format!(
            "rpc_duration_seconds{{service=\"a\\\"b\",quantile=\"{quantile}\"}} NaN\n"
        ));
    }
    text.push_str("rpc_duration_seconds_sum{service=\"a\\\"b\"} 1.5e+3\nrpc_duration_seconds_count{service=\"a\\\"b\"} 200\n");
    written += 5;
    for index in 0..series.saturating_sub(written) {
        text.push_str(&format!(
            "legacy_untyped_value{{instance=\"i-{index:08}\"}} -Inf 1700000000000\n"
        ));
    }
    text
}

fn rule(
    metric: &str,
    kind: &str,
    by: &[&str],
    collapse: bool,
    function: Option<&str>,
) -> RuleSettings {
    RuleSettings {
        metric: metric.to_string(),
        kind: Some(MetricType::from_name(kind).expect("a metric type")),
        drop: false,
        by: Some(by.iter().map(|label| label.to_string()).collect()),
        collapse_status: collapse,
        function: function.map(|name| match name {
            "min" => Function::Min,
            "max" => Function::Max,
            "avg" => Function::Avg,
            _ => Function::Sum,
        }),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let series: usize = args
        .next()
        .map_or(10_000, |n| n.parse().expect("SERIES is a number"));
    let runs: usize = args
        .next()
        .map_or(21, |n| n.parse().expect("RUNS is a number"));
    let text = exposition(series);
    let rules = RuleSet::compile(&[
        rule(
            "todo_http_requests_total",
            "counter",
            &["method", "route", "status_class"],
            true,
            None,
        ),
        rule(
            "todo_http_request_duration_seconds",
            "histogram",
            &["route", "le"],
            false,
            None,
        ),
        rule(
            "todo_db_pool_connections",
            "gauge",
            &["state"],
            false,
            Some("max"),
        ),
    ])
    .expect("valid rules");

    let mut parse_times = Vec::with_capacity(runs);
    let mut rules_times = Vec::with_capacity(runs);
    let mut total_times = Vec::with_capacity(runs);
    let mut summary = (0, 0, 0, 0);
    for _ in 0..runs {
        let started = Instant::now();
        let families = parse(&text, Format::Text).expect("the generated exposition parses");
        let parsed = started.elapsed();
        let input_series = series_count(&families);
        let (mut families, _) = rules.apply(families);
        let dropped = limit_series(&mut families, 10_000);
        let aggregated = started.elapsed();
        let output = encode_to_string(&families);
        total_times.push(started.elapsed());
        parse_times.push(parsed);
        rules_times.push(aggregated - parsed);
        summary = (input_series, series_count(&families), dropped, output.len());
        std::hint::black_box(output);
    }
    parse_times.sort();
    rules_times.sort();
    total_times.sort();
    let median = |times: &[std::time::Duration]| times[times.len() / 2].as_secs_f64();
    let megabytes = text.len() as f64 / 1e6;
    println!("input_bytes={}", text.len());
    println!("input_series={}", summary.0);
    println!("output_series={}", summary.1);
    println!("dropped_series={}", summary.2);
    println!("output_bytes={}", summary.3);
    println!("runs={runs}");
    println!("parse_median_ms={:.3}", median(&parse_times) * 1e3);
    println!(
        "rules_and_guard_median_ms={:.3}",
        median(&rules_times) * 1e3
    );
    println!("scrape_median_ms={:.3}", median(&total_times) * 1e3);
    println!("parse_mb_per_s={:.0}", megabytes / median(&parse_times));
    println!("scrape_mb_per_s={:.0}", megabytes / median(&total_times));
}
