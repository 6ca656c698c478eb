//! The log shipper end to end: the real `todo-sidecar run` tails files
//! written like todo-app writes them and ships to test receivers. Each test
//! writes numbered lines and checks that every number arrived, counting
//! duplicates.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use todo_app::log_file::RotatingFile;
use todo_sidecar::logship::events::{CheckpointErrorReason, FailureReason};

use super::helpers::{BIN, ChildGuard, free_port, http, wait_for};
use super::logship_receiver::{Receiver, numbers, tally};

/// `logship.batch.max_lines`' default (docs/logship.md): the most lines one
/// resent batch can repeat.
const DEFAULT_BATCH_MAX_LINES: f64 = 5000.0;
/// Deadline for lines to arrive once the sink can take them.
const DELIVERY: Duration = Duration::from_secs(30);

/// `todo-sidecar run` shipping `dir/app.log`.
struct Shipper {
    dir: tempfile::TempDir,
    vars: HashMap<String, String>,
    admin_port: u16,
    child: Option<ChildGuard>,
}

impl Shipper {
    fn new() -> Shipper {
        let dir = tempfile::tempdir().expect("creates a temporary directory");
        let admin_port = free_port();
        let mut shipper = Shipper {
            vars: HashMap::new(),
            admin_port,
            child: None,
            dir,
        };
        let path = |name: &str| shipper.dir.path().join(name).display().to_string();
        let settings = [
            ("SIDECAR__ADMIN__PORT", admin_port.to_string()),
            ("SIDECAR__ADMIN__SHUTDOWN_TIMEOUT_SECONDS", "10".to_string()),
            ("SIDECAR__BACKUP__ENABLED", "false".to_string()),
            ("SIDECAR__AGGREGATE__ENABLED", "false".to_string()),
            ("SIDECAR__LOGSHIP__PATHS", path("app.log")),
            (
                "SIDECAR__LOGSHIP__CHECKPOINT_PATH",
                path("state/checkpoint.json"),
            ),
            (
                "SIDECAR__LOGSHIP__DEAD_LETTER__PATH",
                path("state/dead-letter.ndjson"),
            ),
            ("SIDECAR__LOGSHIP__POLL_INTERVAL_MS", "50".to_string()),
            ("SIDECAR__LOGSHIP__BATCH__MAX_LINES", "200".to_string()),
            ("SIDECAR__LOGSHIP__BATCH__TIMEOUT_MS", "100".to_string()),
            (
                "SIDECAR__LOGSHIP__RETRY__INITIAL_BACKOFF_MS",
                "50".to_string(),
            ),
            ("SIDECAR__LOGSHIP__RETRY__MAX_BACKOFF_MS", "400".to_string()),
            (
                "SIDECAR__LOGSHIP__RETRY__REQUEST_TIMEOUT_MS",
                "5000".to_string(),
            ),
        ];
        for (name, value) in settings {
            shipper.vars.insert(name.to_string(), value);
        }
        shipper
    }

    fn set(&mut self, name: &str, value: &str) -> &mut Shipper {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("app.log")
    }

    fn dead_letters(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.path().join("state/dead-letter.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("dead letters are JSON lines"))
            .collect()
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let output = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .expect("opens the output file")
        };
        let mut command = Command::new(BIN);
        command.arg("run").env_clear();
        for name in ["PATH", "HOME"] {
            if let Ok(value) = std::env::var(name) {
                command.env(name, value);
            }
        }
        let child = command
            .envs(&self.vars)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output("sidecar.stdout")))
            .stderr(Stdio::from(output("sidecar.stderr")))
            .spawn()
            .expect("starts todo-sidecar");
        self.child = Some(ChildGuard(child));
        wait_for("the admin listener", Duration::from_secs(30), || {
            http(self.admin_port, "GET", "/health/live").map(|_| ())
        });
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.0.kill().expect("kills the sidecar");
            child.0.wait().expect("reaps the sidecar");
        }
    }

    /// SIGTERM, and wait for the exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .expect("runs kill");
        assert!(status.success());
        let exited = wait_for("the sidecar to exit", Duration::from_secs(20), || {
            child.0.try_wait().expect("waits")
        });
        assert!(exited.success(), "exit status {exited}\n{}", self.output());
    }

    fn output(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            read("sidecar.stdout"),
            read("sidecar.stderr")
        )
    }

    /// Waits until every sink acknowledged everything in the files.
    fn wait_for_no_lag(&self) {
        wait_for("the lag to drop to 0", Duration::from_secs(10), || {
            (self.metric("todo_logship_lag_bytes") == 0.0).then_some(())
        });
    }

    /// The sidecar's own log records (JSON lines on its stdout).
    fn log_records(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.path().join("sidecar.stdout"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The value of one sample of `/metrics` (`name{labels}` as rendered).
    /// Checks at-least-once without needless repeats: a line may arrive twice
    /// only when its batch was sent again after an attempt the sink counted
    /// as failed (a timeout on a loaded machine, say), so with no counted
    /// failure there must be no duplicate, and with some no more than the
    /// batches they resent can hold. Fails with the counted failures and the
    /// sidecar's own output, which say why.
    fn assert_no_duplicates_beyond_retries(&self, duplicates: usize) {
        if duplicates == 0 {
            return;
        }
        let (_, metrics) = http(self.admin_port, "GET", "/metrics").unwrap_or_default();
        let failures: Vec<&str> = metrics
            .lines()
            .filter(|line| {
                line.starts_with("todo_logship_failures_total{") && !line.ends_with(" 0")
            })
            .collect();
        let failed_attempts: f64 = failures
            .iter()
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(
            duplicates as f64 <= failed_attempts * DEFAULT_BATCH_MAX_LINES,
            "{duplicates} lines arrived twice; delivery failures counted: {failures:?}\n{}",
            self.output()
        );
        eprintln!("{duplicates} duplicates, explained by the resent batches of {failures:?}");
    }

    fn metric(&self, series: &str) -> f64 {
        let (_, body) = http(self.admin_port, "GET", "/metrics").expect("/metrics answers");
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// A bunyan record like todo-app's, numbered.
fn record(number: u64) -> String {
    format!(
        r#"{{"v":0,"name":"todo-app","msg":"[HTTP REQUEST - END]","level":{},"hostname":"pod-1","pid":7,"time":"2026-11-26T12:00:00.{:06}Z","request_id":"req-{number}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","n":{number}}}"#,
        if number.is_multiple_of(10) { 50 } else { 30 },
        number % 1_000_000
    )
}

/// Records `numbers`, one per line.
fn records(numbers: std::ops::Range<u64>) -> String {
    numbers.map(|n| record(n) + "\n").collect()
}

fn append(path: &PathBuf, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("opens the log file")
        .write_all(text.as_bytes())
        .expect("appends");
}

/// The runs of consecutive line numbers that arrived more than once.
fn duplicated_ranges(lines: &[String]) -> Vec<(u64, u64)> {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for number in numbers(lines) {
        *seen.entry(number).or_default() += 1;
    }
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (number, _) in seen.into_iter().filter(|(_, times)| *times > 1) {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == number => *end = number,
            _ => ranges.push((number, number)),
        }
    }
    ranges
}

/// Waits until every number of 0..count reached the receiver; returns the duplicates.
fn wait_for_all(receiver: &Receiver, shipper: &Shipper, count: u64) -> usize {
    let deadline = Instant::now() + DELIVERY;
    loop {
        let (missing, duplicates) = tally(&receiver.loki_lines(), count);
        if missing.is_empty() {
            return duplicates;
        }
        assert!(
            Instant::now() < deadline,
            "{} lines never arrived (first: {:?})\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            shipper.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn loki_shipper(receiver: &Receiver) -> Shipper {
    let mut shipper = Shipper::new();
    shipper.set("SIDECAR__LOGSHIP__SINKS__LOKI__URL", &receiver.url());
    shipper
}

#[test]
fn steady_writing_arrives_at_loki_once_with_only_the_configured_labels() {
    let receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    shipper.set("SIDECAR__LOGSHIP__SINKS__LOKI__LABELS__NAMESPACE", "shop");
    shipper.start();
    let mut writer = RotatingFile::open(shipper.log_path(), 1 << 30, 5).expect("opens app.log");

    for chunk in 0..20u64 {
        let text = records(chunk * 100..(chunk + 1) * 100);
        // Flushed as todo-app's log thread does after each batch.
        writer.write_all(text.as_bytes()).unwrap();
        writer.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }

    let duplicates = wait_for_all(&receiver, &shipper, 2000);
    assert_eq!(duplicates, 0, "no restart, so no duplicate");
    assert_eq!(receiver.violations(), Vec::<String>::new());
    let recorded = receiver.recorded.lock().unwrap();
    for (labels, _, line) in &recorded.loki {
        let expected_level = if numbers(std::slice::from_ref(line))[0].is_multiple_of(10) {
            "error"
        } else {
            "info"
        };
        let expected = [
            ("app", "todo-app"),
            ("level", expected_level),
            ("namespace", "shop"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()));
        assert_eq!(labels, &expected.into_iter().collect(), "{line}");
    }
    // Lines are shipped as written.
    assert!(
        recorded
            .loki
            .iter()
            .any(|(_, _, line)| *line == record(1234))
    );
    drop(recorded);
    assert_eq!(shipper.metric("todo_logship_lines_read_total"), 2000.0);
    assert_eq!(
        shipper.metric("todo_logship_lines_shipped_total{sink=\"loki\"}"),
        2000.0
    );
    shipper.wait_for_no_lag();
}

#[test]
fn rotation_by_rename_while_shipping_loses_nothing_and_repeats_only_resent_batches() {
    let receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    // As docs/logship.md says: at least the app's log.max_files.
    shipper.set("SIDECAR__LOGSHIP__MAX_ROTATED_FILES", "50");
    shipper.start();
    // todo-app's own writer, rotating every ~8 KiB and keeping 50 files.
    let mut writer = RotatingFile::open(shipper.log_path(), 8 * 1024, 50).expect("opens app.log");

    for n in 0..3000u64 {
        writer.write_all((record(n) + "\n").as_bytes()).unwrap();
        if n % 300 == 0 {
            writer.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30));
            // Never let the shipper fall further behind than the writer
            // keeps files (1,500 lines ≈ 37 files of 8 KiB, of 50 kept): on
            // a loaded machine the writer would otherwise delete files the
            // shipper has not reached, a loss the configuration allows.
            wait_for("the shipper within 1,500 lines", DELIVERY, || {
                (numbers(&receiver.loki_lines()).len() as u64 + 1500 >= n).then_some(())
            });
        }
    }
    writer.flush().unwrap();

    let duplicates = wait_for_all(&receiver, &shipper, 3000);
    // Every line arrived, and none twice unless the sink counted failed
    // attempts (a resent batch). Under the whole parallel suite this test
    // once saw two or three whole files (78, 117 lines) arrive twice with no
    // failure: files created while the tailer scanned for the newer ones,
    // overtaking the scan, were read out of order and then again (the
    // source's unit tests reproduce it step by step).
    if duplicates > 0 {
        eprintln!(
            "{duplicates} lines arrived twice: {:?}",
            duplicated_ranges(&receiver.loki_lines())
        );
    }
    shipper.assert_no_duplicates_beyond_retries(duplicates);
    assert!(
        shipper.dir.path().join("app.log.20").exists(),
        "rotated many times"
    );
    assert_eq!(receiver.violations(), Vec::<String>::new());
}

#[test]
fn copytruncate_while_shipping_loses_nothing_and_repeats_only_resent_batches() {
    let receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    shipper.start();
    let path = shipper.log_path();

    let mut written = 0u64;
    for round in 0..5 {
        let text = records(written..written + 300);
        append(&path, &text);
        written += 300;
        // Let the shipper read part of the file, as it would in real life.
        wait_for("some lines of the round", DELIVERY, || {
            (numbers(&receiver.loki_lines()).len() as u64 > written - 300).then_some(())
        });
        let copy = shipper.dir.path().join(format!("app.log.{}", round + 1));
        fs::copy(&path, &copy).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    append(&path, &records(written..written + 100));
    written += 100;

    let duplicates = wait_for_all(&receiver, &shipper, written);
    shipper.assert_no_duplicates_beyond_retries(duplicates);
}

#[test]
fn kill_9_at_random_points_repeats_at_most_one_batch_per_kill() {
    let receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    shipper.set("SIDECAR__LOGSHIP__BATCH__MAX_LINES", "50");
    // At least the writer's max_files (docs/logship.md).
    shipper.set("SIDECAR__LOGSHIP__MAX_ROTATED_FILES", "50");
    let path = shipper.log_path();
    let mut writer = RotatingFile::open(&path, 64 * 1024, 50).expect("opens app.log");
    let mut written = 0u64;
    let kills = 6;
    // Pseudo-random kill delays (deterministic across runs, varied within one).
    let seed = std::process::id() as u64;
    for kill in 0..kills {
        shipper.start();
        let delay = 100 + (seed.wrapping_mul(2654435761).wrapping_add(kill * 7919) % 500);
        let until = Instant::now() + Duration::from_millis(delay);
        while Instant::now() < until {
            let text = records(written..written + 40);
            writer.write_all(text.as_bytes()).unwrap();
            writer.flush().unwrap();
            written += 40;
            std::thread::sleep(Duration::from_millis(10));
        }
        shipper.kill();
    }
    shipper.start();

    let duplicates = wait_for_all(&receiver, &shipper, written);
    assert!(
        duplicates <= kills as usize * 50,
        "{duplicates} duplicates for {kills} kills of at most one 50-line batch each"
    );
    assert_eq!(tally(&receiver.loki_lines(), written).0, Vec::<u64>::new());
}

#[test]
fn a_sink_down_for_5_seconds_gets_everything_when_back_and_lag_grows_meanwhile() {
    // The issue's scenario is 30 s; 5 s shows the same (the shipper retries
    // with a capped backoff, the files buffer) in a test that stays quick.
    let mut receiver = Receiver::down();
    let mut shipper = loki_shipper(&receiver);
    shipper.start();
    let path = shipper.log_path();
    append(&path, &records(0..500));
    let lag_at_first = wait_for(
        "lag while the sink is down",
        Duration::from_secs(10),
        || {
            let lag = shipper.metric("todo_logship_lag_bytes");
            (lag > 0.0).then_some(lag)
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    append(&path, &records(500..1000));
    wait_for("the lag to grow", Duration::from_secs(10), || {
        (shipper.metric("todo_logship_lag_bytes") > lag_at_first).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        shipper.metric("todo_logship_failures_total{reason=\"connection\",sink=\"loki\"}") >= 2.0
    );
    assert!(receiver.loki_lines().is_empty());
    // Reading stopped: the batch being retried and the one read ahead
    // (200 lines each), not the 1000 lines on disk.
    assert_eq!(shipper.metric("todo_logship_lines_read_total"), 400.0);
    let (_, ready) = http(shipper.admin_port, "GET", "/health/ready").unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(
        ready["components"]["logship"],
        serde_json::json!({"status": "degraded", "message": "loki: connection; retrying"})
    );

    receiver.resume();

    assert_eq!(wait_for_all(&receiver, &shipper, 1000), 0);
    shipper.wait_for_no_lag();
    wait_for(
        "the component to be ok again",
        Duration::from_secs(10),
        || {
            let (_, ready) = http(shipper.admin_port, "GET", "/health/ready")?;
            ready
                .contains("\"logship\":{\"status\":\"ok\"}")
                .then_some(())
        },
    );
}

#[test]
fn while_a_sink_is_down_the_lag_counts_the_files_rotated_in_meanwhile() {
    // Reading stops while a batch is retried, so rotations during an outage
    // are not seen by the reader; the lag, which the alert on log shipping
    // watches, must count them all the same.
    let mut receiver = Receiver::down();
    let mut shipper = loki_shipper(&receiver);
    shipper.start();
    let path = shipper.log_path();
    let rotated = |index: u64| PathBuf::from(format!("{}.{index}", path.display()));
    append(&path, &records(0..500));
    wait_for(
        "reading to stop behind the batch being retried",
        Duration::from_secs(10),
        || (shipper.metric("todo_logship_lines_read_total") == 400.0).then_some(()),
    );

    // Two rotations as todo-app makes them, 500 lines each.
    std::fs::rename(&path, rotated(1)).unwrap();
    let second = records(500..1000);
    append(&path, &second);
    std::fs::rename(rotated(1), rotated(2)).unwrap();
    std::fs::rename(&path, rotated(1)).unwrap();
    let third = records(1000..1500);
    append(&path, &third);

    let rotated_in = (second.len() + third.len()) as f64;
    wait_for(
        "the lag to count the rotated files",
        Duration::from_secs(10),
        || (shipper.metric("todo_logship_lag_bytes") >= rotated_in).then_some(()),
    );
    receiver.resume();
    assert_eq!(wait_for_all(&receiver, &shipper, 1500), 0);
    shipper.wait_for_no_lag();
}

#[test]
fn a_sink_answering_500_then_429_then_200_gets_the_batch_once() {
    let receiver = Receiver::start();
    receiver.script(&[500, 429]);
    let mut shipper = loki_shipper(&receiver);
    shipper.start();
    let started = Instant::now();
    append(&shipper.log_path(), &records(0..100));

    assert_eq!(wait_for_all(&receiver, &shipper, 100), 0);
    // 429 came with Retry-After: 1, which is honoured.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(&receiver.statuses()[..3], &[500, 429, 204]);
    assert_eq!(
        shipper.metric("todo_logship_failures_total{reason=\"server_error\",sink=\"loki\"}"),
        1.0
    );
    assert_eq!(
        shipper.metric("todo_logship_failures_total{reason=\"rate_limited\",sink=\"loki\"}"),
        1.0
    );
    assert!(shipper.dead_letters().is_empty());
}

#[test]
fn refused_credentials_or_a_wrong_path_are_retried_not_dead_lettered() {
    let receiver = Receiver::start();
    receiver.script(&[401, 403, 404]);
    let mut shipper = loki_shipper(&receiver);
    shipper.start();
    append(&shipper.log_path(), &records(0..50));

    assert_eq!(wait_for_all(&receiver, &shipper, 50), 0);
    assert_eq!(&receiver.statuses()[..4], &[401, 403, 404, 204]);
    assert_eq!(
        shipper.metric("todo_logship_failures_total{reason=\"unauthorized\",sink=\"loki\"}"),
        2.0
    );
    assert_eq!(
        shipper.metric("todo_logship_failures_total{reason=\"not_found\",sink=\"loki\"}"),
        1.0
    );
    assert!(shipper.dead_letters().is_empty());
}

#[test]
fn a_poison_batch_is_dead_lettered_and_the_pipeline_goes_on() {
    let receiver = Receiver::start();
    receiver.script(&[400]);
    let mut shipper = loki_shipper(&receiver);
    shipper.start();
    let path = shipper.log_path();
    append(&path, &records(0..30));
    wait_for("the dead letters", DELIVERY, || {
        (shipper.dead_letters().len() == 30).then_some(())
    });

    append(&path, &records(30..100));

    let deadline = Instant::now() + DELIVERY;
    while tally(&receiver.loki_lines(), 100).0 != (0..30).collect::<Vec<_>>() {
        assert!(
            Instant::now() < deadline,
            "lines 30..100 never arrived\n{}",
            shipper.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dead: Vec<String> = shipper
        .dead_letters()
        .iter()
        .map(|letter| {
            assert_eq!(letter["sink"], "loki");
            assert!(
                letter["reason"].as_str().unwrap().starts_with("400"),
                "{letter}"
            );
            letter["line"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(dead, (0..30).map(record).collect::<Vec<_>>());
    assert_eq!(
        shipper.metric("todo_logship_dead_lettered_total{sink=\"loki\"}"),
        30.0
    );
}

#[test]
fn elasticsearch_gets_dated_indices_retries_busy_items_and_dead_letters_poison_ones() {
    let receiver = Receiver::start();
    let mut shipper = Shipper::new();
    shipper.set(
        "SIDECAR__LOGSHIP__SINKS__ELASTICSEARCH__URL",
        &receiver.url(),
    );
    receiver
        .recorded
        .lock()
        .unwrap()
        .es_retry_once
        .extend(["\"n\":7}".to_string(), "\"n\":77}".to_string()]);
    shipper.start();
    let path = shipper.log_path();
    let mut text = records(0..50);
    text.push_str("POISON not json\n");
    text.push_str(&records(50..100));
    append(&path, &text);

    let deadline = Instant::now() + DELIVERY;
    loop {
        let documents: Vec<String> = receiver
            .recorded
            .lock()
            .unwrap()
            .elasticsearch
            .iter()
            .map(|(_, _, document)| document.to_string())
            .collect();
        let (missing, duplicates) = tally(&documents, 100);
        if missing.is_empty() {
            assert_eq!(duplicates, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing {missing:?}\n{}",
            shipper.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let recorded = receiver.recorded.lock().unwrap();
    assert!(recorded.elasticsearch.iter().all(|(index, _, document)| {
        index == "todo-logs-2026.11.26"
            && document["@timestamp"]
                .as_str()
                .is_some_and(|t| t.starts_with("2026-11-26T12:00:00"))
    }));
    assert_eq!(recorded.violations, Vec::<String>::new());
    // The busy items were answered 429 once, then sent again alone.
    assert!(recorded.es_retry_once.is_empty());
    drop(recorded);
    assert!(
        shipper.metric(
            "todo_logship_failures_total{reason=\"item_retryable\",sink=\"elasticsearch\"}"
        ) >= 1.0
    );
    let dead = wait_for("the dead letter", DELIVERY, || {
        let dead = shipper.dead_letters();
        (!dead.is_empty()).then_some(dead)
    });
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["line"], "POISON not json");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("mapper_parsing_exception")
    );
}

#[test]
fn malformed_and_oversized_lines_are_shipped_raw_and_marked() {
    let receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    shipper.set("SIDECAR__LOGSHIP__MAX_LINE_BYTES", "1000");
    shipper.start();
    let long = format!(r#"{{"msg":"line 2 {}"}}"#, "y".repeat(10_000));
    append(
        &shipper.log_path(),
        &format!(
            "line 0 is not JSON\n{{\"msg\": \"line 1 broken\n{long}\n{}\n",
            record(3)
        ),
    );

    wait_for_all(&receiver, &shipper, 4);
    let lines = receiver.loki_lines();
    assert_eq!(lines[0], "line 0 is not JSON");
    assert_eq!(lines[1], "{\"msg\": \"line 1 broken");
    assert_eq!(
        lines[2],
        format!(
            "{}…[truncated, original bytes: {}]",
            &long[..1000],
            long.len()
        )
    );
    assert_eq!(lines[3], record(3));
    let labels = &receiver.recorded.lock().unwrap().loki[0].0;
    assert_eq!(labels.get("level").map(String::as_str), Some("unknown"));
}

#[test]
fn an_unterminated_last_line_is_shipped_at_shutdown_and_whole_if_its_writer_finishes_it() {
    let receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    shipper.start();
    let path = shipper.log_path();
    append(&path, &records(0..10));
    let last = record(10);
    append(&path, &last[..40]);
    wait_for_all(&receiver, &shipper, 10);

    // On SIGTERM the writer is gone (a native sidecar outlives the app), so
    // the fragment is shipped; the checkpoint stays before it.
    shipper.stop();
    assert_eq!(
        receiver.loki_lines().last().map(String::as_str),
        Some(&last[..40])
    );
    append(&path, &format!("{}\n", &last[40..]));
    shipper.start();

    assert_eq!(wait_for_all(&receiver, &shipper, 11), 0);
    assert_eq!(receiver.loki_lines().last(), Some(&last));
    assert_eq!(
        receiver.loki_lines().len(),
        12,
        "the fragment, then the whole line"
    );
}

/// The pod is deleted: the app writes, the sink fails, the app exits, the
/// sink comes back as the sidecar gets SIGTERM (a Loki restarted in the same
/// rollout). The drain ships everything before the files go with the pod.
#[test]
fn on_sigterm_every_line_is_shipped_before_exit_even_after_a_sink_outage() {
    let mut receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    // Without the drain, the next retry would come long after the exit.
    shipper.set("SIDECAR__LOGSHIP__RETRY__INITIAL_BACKOFF_MS", "20000");
    shipper.set("SIDECAR__LOGSHIP__RETRY__MAX_BACKOFF_MS", "30000");
    shipper.set("SIDECAR__LOGSHIP__MAX_ROTATED_FILES", "50");
    shipper.start();
    // todo-app's own writer, rotating every 64 KiB.
    let mut app = RotatingFile::open(shipper.log_path(), 64 * 1024, 50).expect("opens app.log");
    app.write_all(records(0..500).as_bytes()).unwrap();
    app.flush().unwrap();
    wait_for_all(&receiver, &shipper, 500);

    receiver.stop();
    for n in 500..3000u64 {
        app.write_all((record(n) + "\n").as_bytes()).unwrap();
        if n % 100 == 0 {
            app.flush().unwrap();
        }
    }
    let last = record(3000);
    app.write_all(last.as_bytes()).unwrap();
    app.flush().unwrap();
    drop(app);
    wait_for("the sink failing", DELIVERY, || {
        (shipper.metric("todo_logship_failures_total{reason=\"connection\",sink=\"loki\"}") >= 1.0)
            .then_some(())
    });
    receiver.resume();
    shipper.stop();

    let (missing, _) = tally(&receiver.loki_lines(), 3001);
    assert_eq!(missing, Vec::<u64>::new(), "{}", shipper.output());
    assert!(
        shipper
            .output()
            .contains("log shipping drained: every line written was shipped")
    );
}

#[test]
fn at_the_drain_deadline_the_sidecar_exits_counting_what_it_could_not_ship() {
    let mut receiver = Receiver::down();
    let mut shipper = loki_shipper(&receiver);
    shipper.set("SIDECAR__LOGSHIP__DRAIN_TIMEOUT_SECONDS", "2");
    shipper.start();
    append(&shipper.log_path(), &records(0..300));
    wait_for("the sink failing", DELIVERY, || {
        (shipper.metric("todo_logship_failures_total{reason=\"connection\",sink=\"loki\"}") >= 1.0)
            .then_some(())
    });

    let stopping = Instant::now();
    shipper.stop();

    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "bounded by the drain deadline"
    );
    let report: serde_json::Value = fs::read_to_string(shipper.dir.path().join("sidecar.stdout"))
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|record| {
            record["msg"]
                .as_str()
                .is_some_and(|msg| msg.starts_with("log shipping stopped at the drain deadline"))
        })
        .unwrap_or_else(|| panic!("the drain reports what it left\n{}", shipper.output()));
    // Read in two 200-line batches: one being retried, one read ahead.
    assert_eq!(report["lines_read_not_shipped"], 300);
    let written = fs::metadata(shipper.log_path()).unwrap().len();
    assert_eq!(
        report["bytes_not_shipped"],
        written - 300,
        "the lines without their newlines"
    );
    // Nothing was acknowledged: after a restart (the files are still here) all arrive.
    receiver.resume();
    shipper.start();
    assert_eq!(wait_for_all(&receiver, &shipper, 300), 0);
}

#[test]
fn the_stdout_sink_prints_every_line() {
    let mut shipper = Shipper::new();
    shipper.set("SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED", "true");
    shipper.start();
    append(&shipper.log_path(), &records(0..50));

    let stdout_path = shipper.dir.path().join("sidecar.stdout");
    wait_for("the lines on stdout", DELIVERY, || {
        let text = fs::read_to_string(&stdout_path).ok()?;
        let shipped: Vec<String> = text
            .lines()
            .filter(|line| line.contains("\"name\":\"todo-app\""))
            .map(str::to_string)
            .collect();
        (shipped == (0..50).map(record).collect::<Vec<_>>()).then_some(())
    });
}

#[test]
fn bearer_and_basic_credentials_come_from_secret_files_and_bodies_are_gzipped() {
    let loki = Receiver::start();
    let elasticsearch = Receiver::start();
    let mut shipper = loki_shipper(&loki);
    let token = shipper.dir.path().join("loki-token");
    let password = shipper.dir.path().join("es-password");
    fs::write(&token, "t0ken-from-secret\n").unwrap();
    fs::write(&password, "pa55word\n").unwrap();
    shipper
        .set("SIDECAR__LOGSHIP__SINKS__LOKI__HTTP__AUTH", "bearer")
        .set(
            "SIDECAR__LOGSHIP__SINKS__LOKI__HTTP__TOKEN_FILE",
            token.to_str().unwrap(),
        )
        .set(
            "SIDECAR__LOGSHIP__SINKS__ELASTICSEARCH__URL",
            &elasticsearch.url(),
        )
        .set(
            "SIDECAR__LOGSHIP__SINKS__ELASTICSEARCH__HTTP__AUTH",
            "basic",
        )
        .set(
            "SIDECAR__LOGSHIP__SINKS__ELASTICSEARCH__HTTP__USERNAME",
            "shipper",
        )
        .set(
            "SIDECAR__LOGSHIP__SINKS__ELASTICSEARCH__HTTP__PASSWORD_FILE",
            password.to_str().unwrap(),
        )
        .set(
            "SIDECAR__LOGSHIP__SINKS__ELASTICSEARCH__HTTP__GZIP",
            "false",
        );
    shipper.start();

    append(&shipper.log_path(), &records(0..300));

    assert_eq!(wait_for_all(&loki, &shipper, 300), 0);
    wait_for("the documents", DELIVERY, || {
        (elasticsearch.recorded.lock().unwrap().elasticsearch.len() == 300).then_some(())
    });
    let loki = loki.recorded.lock().unwrap();
    assert!(!loki.authorizations.is_empty());
    assert!(
        loki.authorizations
            .iter()
            .all(|value| value == "Bearer t0ken-from-secret")
    );
    assert!(loki.encodings.iter().all(|encoding| encoding == "gzip"));
    let elasticsearch = elasticsearch.recorded.lock().unwrap();
    // base64("shipper:pa55word")
    assert!(
        elasticsearch
            .authorizations
            .iter()
            .all(|value| value == "Basic c2hpcHBlcjpwYTU1d29yZA==")
    );
    assert!(
        elasticsearch
            .encodings
            .iter()
            .all(|encoding| encoding == "identity")
    );
    // The secrets are in no log line.
    let output = shipper.output();
    assert!(!output.contains("t0ken-from-secret") && !output.contains("pa55word"));
}

#[test]
fn a_corrupt_checkpoint_is_reported_and_shipping_starts_from_the_beginning() {
    let receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    let checkpoint = shipper.dir.path().join("state/checkpoint.json");
    fs::create_dir_all(checkpoint.parent().unwrap()).unwrap();
    fs::write(&checkpoint, b"{\"version\":1,\"files\":{\"/x\":{\"fingerpr").unwrap();
    append(&shipper.log_path(), &records(0..100));

    shipper.start();

    assert_eq!(wait_for_all(&receiver, &shipper, 100), 0);
    assert_eq!(
        shipper.metric("todo_logship_checkpoint_errors_total{reason=\"corrupt\"}"),
        1.0
    );
    assert!(
        shipper
            .output()
            .contains("the log shipping checkpoint is unusable")
    );
    // Rewritten whole once the batch was acknowledged.
    wait_for("a valid checkpoint", Duration::from_secs(10), || {
        let text = fs::read(&checkpoint).ok()?;
        serde_json::from_slice::<serde_json::Value>(&text).ok()
    });
    let (_, body) = http(shipper.admin_port, "GET", "/health/ready").unwrap();
    assert!(body.contains("\"logship\":{\"status\":\"ok\"}"), "{body}");
}

#[test]
fn an_otlp_partial_success_dead_letters_the_batch_counts_it_and_the_pipeline_goes_on() {
    let receiver = Receiver::start();
    // The collector accepts the first export but rejects 3 of its records
    // without saying which: that whole batch goes to the dead letters.
    receiver.recorded.lock().unwrap().otlp_reject_next = Some(3);
    let mut shipper = Shipper::new();
    shipper.set("SIDECAR__LOGSHIP__SINKS__OTLP__URL", &receiver.url());
    shipper.start();
    append(&shipper.log_path(), &records(0..50));

    // Every line is either dead-lettered (the first batch) or delivered.
    let delivered = wait_for("every line dead-lettered or delivered", DELIVERY, || {
        let delivered: Vec<u64> = receiver
            .recorded
            .lock()
            .unwrap()
            .otlp
            .iter()
            .map(|record| record.attributes["n"].parse().unwrap())
            .collect();
        (delivered.len() + shipper.dead_letters().len() >= 50).then_some(delivered)
    });

    let dead: Vec<String> = shipper
        .dead_letters()
        .iter()
        .map(|letter| {
            assert_eq!(letter["sink"], "otlp");
            letter["line"].as_str().unwrap().to_string()
        })
        .collect();
    let first_batch = dead.len() as u64;
    assert!(first_batch > 0, "the rejected batch was dead-lettered");
    assert_eq!(dead, (0..first_batch).map(record).collect::<Vec<_>>());
    assert_eq!(
        delivered,
        (first_batch..50).collect::<Vec<_>>(),
        "the rest, once, in order"
    );
    assert_eq!(
        shipper.metric("todo_logship_failures_total{reason=\"partial_success\",sink=\"otlp\"}"),
        1.0
    );
    assert_eq!(
        shipper.metric("todo_logship_dead_lettered_total{sink=\"otlp\"}"),
        first_batch as f64
    );
}

#[test]
fn otlp_records_carry_severity_trace_ids_and_fields() {
    let receiver = Receiver::start();
    let mut shipper = Shipper::new();
    shipper.set("SIDECAR__LOGSHIP__SINKS__OTLP__URL", &receiver.url());
    shipper.start();
    let mut text = records(0..200);
    text.push_str("plain text line 200\n");
    append(&shipper.log_path(), &text);

    let records = wait_for("the OTLP records", DELIVERY, || {
        let records = receiver.recorded.lock().unwrap().otlp.clone();
        (records.len() >= 201).then_some(records)
    });

    assert_eq!(records.len(), 201, "no duplicate");
    assert_eq!(receiver.violations(), Vec::<String>::new());
    for (n, record) in records[..200].iter().enumerate() {
        let error = n % 10 == 0;
        assert_eq!(record.service_name, "todo-app");
        assert_eq!(record.severity_number, if error { 17 } else { 9 });
        assert_eq!(record.severity_text, if error { "ERROR" } else { "INFO" });
        assert_eq!(record.body, "[HTTP REQUEST - END]");
        assert_eq!(record.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            record.time_unix_nano,
            1_795_694_400_000_000_000 + (n as u64 % 1_000_000) * 1000
        );
        assert_eq!(record.attributes["n"], n.to_string());
        assert_eq!(record.attributes["request_id"], format!("req-{n}"));
        assert!(!record.attributes.contains_key("msg"));
    }
    let raw = &records[200];
    assert_eq!(raw.body, "plain text line 200");
    assert_eq!(raw.severity_number, 0);
    assert_eq!(
        shipper.metric("todo_logship_lines_shipped_total{sink=\"otlp\"}"),
        201.0
    );
}

#[test]
fn a_sink_behind_tls_is_reached_with_the_configured_ca_file() {
    let (receiver, ca_pem) = Receiver::start_tls();
    let mut shipper = Shipper::new();
    let ca_file = shipper.dir.path().join("ca.pem");
    fs::write(&ca_file, ca_pem).unwrap();
    shipper
        .set(
            "SIDECAR__LOGSHIP__SINKS__LOKI__URL",
            &format!("https://localhost:{}", receiver.port),
        )
        .set(
            "SIDECAR__LOGSHIP__SINKS__LOKI__HTTP__CA_FILE",
            ca_file.to_str().unwrap(),
        );
    shipper.start();

    append(&shipper.log_path(), &records(0..100));

    assert_eq!(wait_for_all(&receiver, &shipper, 100), 0);
}

#[test]
fn without_the_ca_file_a_tls_sink_is_retried_and_nothing_is_acknowledged() {
    let (receiver, _) = Receiver::start_tls();
    let mut shipper = Shipper::new();
    shipper.set(
        "SIDECAR__LOGSHIP__SINKS__LOKI__URL",
        &format!("https://localhost:{}", receiver.port),
    );
    shipper.start();

    append(&shipper.log_path(), &(record(0) + "\n"));

    wait_for("failed TLS handshakes", Duration::from_secs(20), || {
        (shipper.metric("todo_logship_failures_total{reason=\"connection\",sink=\"loki\"}") >= 2.0)
            .then_some(())
    });
    assert!(receiver.loki_lines().is_empty());
    assert_eq!(
        shipper.metric("todo_logship_lines_shipped_total{sink=\"loki\"}"),
        0.0
    );
}

#[test]
fn every_configured_path_is_shipped() {
    let receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    let other = shipper.dir.path().join("other.log");
    let paths = format!("{},{}", shipper.log_path().display(), other.display());
    shipper.set("SIDECAR__LOGSHIP__PATHS", &paths);
    shipper.start();

    append(&shipper.log_path(), &records(0..300));
    append(&other, &records(300..600));

    assert_eq!(wait_for_all(&receiver, &shipper, 600), 0);
    shipper.stop();
    let checkpoint: serde_json::Value = serde_json::from_slice(
        &fs::read(shipper.dir.path().join("state/checkpoint.json")).unwrap(),
    )
    .unwrap();
    let files = checkpoint["files"].as_object().unwrap();
    assert_eq!(files.len(), 2, "{checkpoint}");
    assert_eq!(
        files[&other.display().to_string()]["offset"],
        fs::metadata(&other).unwrap().len()
    );
}

/// The chosen trade-off (docs/logship.md, "One checkpoint for all sinks"):
/// one checkpoint, so a sink that is down holds back the others after the
/// batch in flight, and nothing is lost or repeated for either once it is back.
#[test]
fn a_sink_that_is_down_holds_back_the_healthy_one_and_both_get_everything_once() {
    let loki = Receiver::start();
    let mut elasticsearch = Receiver::down();
    let mut shipper = loki_shipper(&loki);
    shipper.set(
        "SIDECAR__LOGSHIP__SINKS__ELASTICSEARCH__URL",
        &elasticsearch.url(),
    );
    shipper.start();
    append(&shipper.log_path(), &records(0..1000));

    wait_for("Elasticsearch failing", DELIVERY, || {
        (shipper
            .metric("todo_logship_failures_total{reason=\"connection\",sink=\"elasticsearch\"}")
            >= 2.0)
            .then_some(())
    });
    // Loki took the batch in flight (200 lines) and waits with the rest.
    assert_eq!(loki.loki_lines().len(), 200);
    assert_eq!(
        shipper.metric("todo_logship_lines_shipped_total{sink=\"loki\"}"),
        200.0
    );
    elasticsearch.resume();

    assert_eq!(wait_for_all(&loki, &shipper, 1000), 0);
    wait_for("every line in Elasticsearch", DELIVERY, || {
        let recorded = elasticsearch.recorded.lock().unwrap();
        let lines: Vec<String> = recorded
            .elasticsearch
            .iter()
            .map(|(_, _, document)| document.to_string())
            .collect();
        let (missing, duplicates) = tally(&lines, 1000);
        (missing.is_empty()).then_some(duplicates)
    });
    assert_eq!(loki.loki_lines().len(), 1000, "nothing sent twice to Loki");
}

#[test]
fn every_failure_reason_is_exposed_at_0_and_a_failure_is_logged_and_counted_under_the_same_reason()
{
    // Arrange
    let receiver = Receiver::start();
    let mut shipper = loki_shipper(&receiver);
    shipper.start();

    // Assert: once the sink is set up, before any line, every reason is there at 0.
    let body = wait_for("the sink's counters", Duration::from_secs(30), || {
        let (_, body) = http(shipper.admin_port, "GET", "/metrics")?;
        body.contains("todo_logship_lines_shipped_total{sink=\"loki\"} 0")
            .then_some(body)
    });
    for reason in FailureReason::ALL {
        let sample = format!(
            "todo_logship_failures_total{{reason=\"{}\",sink=\"loki\"}} 0",
            reason.as_str()
        );
        assert!(
            body.lines().any(|line| line == sample),
            "{sample} in {body}"
        );
    }
    for reason in CheckpointErrorReason::ALL {
        let series = format!(
            "todo_logship_checkpoint_errors_total{{reason=\"{}\"}} ",
            reason.as_str()
        );
        assert!(body.contains(&series), "{series} in {body}");
    }

    // Act: the sink answers 503 once.
    receiver.script(&[503]);
    append(&shipper.log_path(), &(record(0) + "\n"));
    assert_eq!(wait_for_all(&receiver, &shipper, 1), 0);

    // Assert: the warning and the counter name the same reason.
    let failures: Vec<serde_json::Value> = shipper
        .log_records()
        .into_iter()
        .filter(|record| record["msg"] == "sending a batch failed; retrying")
        .collect();
    assert_eq!(failures.len(), 1, "{}", shipper.output());
    assert_eq!(failures[0]["reason"], FailureReason::ServerError.as_str());
    assert_eq!(failures[0]["sink"], "loki");
    assert_eq!(
        shipper.metric("todo_logship_failures_total{reason=\"server_error\",sink=\"loki\"}"),
        1.0
    );
    assert_eq!(
        shipper.metric("todo_logship_failures_total{reason=\"connection\",sink=\"loki\"}"),
        0.0
    );
}
