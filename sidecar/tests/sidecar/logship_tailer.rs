//! The log shipper's tailer on its own, against real files: rotation by
//! rename, copytruncate, inode reuse, partial and oversized lines, restarts
//! from the checkpoint, and a property test against a model of the writer.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use todo_sidecar::logship::checkpoint::Checkpoint;
use todo_sidecar::logship::config::StartAt;
use todo_sidecar::logship::events::SourceErrorReason;
use todo_sidecar::logship::source::{Line, Position, Tailer, TailerOptions};
use todo_sidecar::metrics::LogshipMetrics;

const MAX_FILES: usize = 3;

/// A tailer over `app.log` in a temporary directory, whose reads are
/// acknowledged into a checkpoint (as the pipeline does after the sinks).
struct Harness {
    dir: tempfile::TempDir,
    tailer: Tailer,
    checkpoint: Checkpoint,
    /// Every line delivered, as text.
    delivered: Vec<String>,
    max_line_bytes: usize,
    /// Where the tailer counts the files it could not read.
    metrics: LogshipMetrics,
}

impl Harness {
    fn new(max_line_bytes: usize) -> Harness {
        let dir = tempfile::tempdir().expect("creates a temporary directory");
        let checkpoint = Checkpoint::default();
        let metrics = LogshipMetrics::new();
        let tailer = open(dir.path(), &checkpoint, max_line_bytes, &metrics);
        Harness {
            dir,
            tailer,
            checkpoint,
            delivered: Vec::new(),
            max_line_bytes,
            metrics,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("app.log")
    }

    fn rotated(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("app.log.{index}"))
    }

    /// `todo_logship_source_errors_total{reason}` as the tailer counted it.
    fn source_errors(&self, reason: SourceErrorReason) -> u64 {
        self.metrics
            .source_errors_total
            .with_label_values(&[reason.as_str()])
            .get()
    }

    fn append(&self, text: &str) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path())
            .expect("opens app.log");
        file.write_all(text.as_bytes()).expect("appends");
    }

    /// Reads everything available, in small batches, acknowledging each.
    fn drain(&mut self) {
        loop {
            let mut lines: Vec<Line> = Vec::new();
            let mut positions: BTreeMap<usize, Position> = BTreeMap::new();
            let consumed = self
                .tailer
                .read(3, 64 * 1024, &mut lines, &mut positions)
                .expect("reads");
            self.delivered.extend(
                lines
                    .iter()
                    .map(|line| String::from_utf8(line.bytes.clone()).expect("UTF-8")),
            );
            for (_, position) in positions {
                self.checkpoint.set(&self.path(), position);
            }
            if !consumed {
                return;
            }
        }
    }

    /// Reads one batch and forgets it (a crash before the acknowledgement).
    fn read_unacknowledged(&mut self) -> usize {
        let mut lines = Vec::new();
        let mut positions = BTreeMap::new();
        self.tailer
            .read(3, 64 * 1024, &mut lines, &mut positions)
            .expect("reads");
        lines.len()
    }

    /// A new tailer from the checkpoint (through its JSON form, as on disk).
    fn restart(&mut self) {
        let file = self.dir.path().join("checkpoint.json");
        self.checkpoint.save(&file).expect("saves the checkpoint");
        self.checkpoint = Checkpoint::load(&file).expect("loads the checkpoint");
        self.tailer = open(
            self.dir.path(),
            &self.checkpoint,
            self.max_line_bytes,
            &self.metrics,
        );
    }

    /// todo-app's rotation: app.log.N-1 → app.log.N, …, app.log → app.log.1, new app.log.
    fn rotate(&self) {
        let _ = fs::remove_file(self.rotated(MAX_FILES));
        for index in (1..MAX_FILES).rev() {
            let _ = fs::rename(self.rotated(index), self.rotated(index + 1));
        }
        fs::rename(self.path(), self.rotated(1)).expect("renames app.log");
        fs::write(self.path(), b"").expect("creates app.log");
    }

    /// logrotate's copytruncate: copy app.log to app.log.1, truncate app.log.
    fn copytruncate(&self) {
        let _ = fs::remove_file(self.rotated(MAX_FILES));
        for index in (1..MAX_FILES).rev() {
            let _ = fs::rename(self.rotated(index), self.rotated(index + 1));
        }
        fs::copy(self.path(), self.rotated(1)).expect("copies app.log");
        OpenOptions::new()
            .write(true)
            .open(self.path())
            .expect("opens app.log")
            .set_len(0)
            .expect("truncates app.log");
    }
}

fn open(
    dir: &Path,
    checkpoint: &Checkpoint,
    max_line_bytes: usize,
    metrics: &LogshipMetrics,
) -> Tailer {
    Tailer::open(
        TailerOptions {
            paths: vec![dir.join("app.log")],
            start_at: StartAt::Beginning,
            max_line_bytes,
            fingerprint_bytes: 1024,
            max_rotated_files: MAX_FILES,
            metrics: metrics.clone(),
        },
        &|path| checkpoint.position(path),
    )
    .0
}

/// A realistic, unique line: numbered, with a timestamp-like field so that
/// files do not share their first bytes.
fn record(number: usize) -> String {
    format!(
        r#"{{"v":0,"name":"todo-app","msg":"request","level":30,"n":{number},"time":"2026-01-01T00:00:00.{number:06}Z"}}"#
    )
}

fn lines(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(record).collect()
}

fn write_lines(harness: &Harness, range: std::ops::Range<usize>) {
    let text: String = range.map(|n| record(n) + "\n").collect();
    harness.append(&text);
}

#[test]
fn lines_written_while_tailing_arrive_once_in_order() {
    let mut harness = Harness::new(64 * 1024);
    write_lines(&harness, 0..10);
    harness.drain();
    write_lines(&harness, 10..25);
    harness.drain();
    assert_eq!(harness.delivered, lines(0..25));
}

#[test]
fn a_renamed_file_is_finished_before_the_new_one() {
    let mut harness = Harness::new(64 * 1024);
    write_lines(&harness, 0..5);
    harness.drain();
    // Written after our last read, then rotated twice before we look again.
    write_lines(&harness, 5..8);
    harness.rotate();
    write_lines(&harness, 8..12);
    harness.rotate();
    write_lines(&harness, 12..15);

    harness.drain();

    assert_eq!(harness.delivered, lines(0..15));
}

#[test]
fn copytruncate_reads_the_copy_then_the_file_from_its_start() {
    let mut harness = Harness::new(64 * 1024);
    write_lines(&harness, 0..5);
    harness.drain();
    write_lines(&harness, 5..9);
    harness.copytruncate();
    write_lines(&harness, 9..12);

    harness.drain();

    assert_eq!(harness.delivered, lines(0..12));
}

#[test]
fn a_truncation_before_the_end_was_read_without_a_copy_is_counted_as_lines_lost() {
    let mut harness = Harness::new(64 * 1024);
    write_lines(&harness, 0..5);
    harness.drain();
    assert_eq!(
        harness.source_errors(SourceErrorReason::TruncatedUnread),
        0,
        "at 0 from the start"
    );
    // Written, then truncated away before the tailer looked again, with no
    // copy anywhere (a copytruncate whose copy is named otherwise).
    write_lines(&harness, 5..8);
    OpenOptions::new()
        .write(true)
        .open(harness.path())
        .unwrap()
        .set_len(0)
        .unwrap();
    write_lines(&harness, 100..101);

    harness.drain();

    let mut expected = lines(0..5);
    expected.extend(lines(100..101));
    assert_eq!(
        harness.delivered, expected,
        "5..8 are gone; the rest is read"
    );
    assert_eq!(
        harness.source_errors(SourceErrorReason::TruncatedUnread),
        1,
        "the loss is counted, not only logged"
    );
}

#[test]
fn a_file_of_the_family_that_cannot_be_read_is_counted_and_the_others_are_shipped() {
    let mut harness = Harness::new(64 * 1024);
    assert_eq!(
        harness.source_errors(SourceErrorReason::Unreadable),
        0,
        "at 0 from the start"
    );
    // Where a rotated file belongs, something that opens but cannot be read
    // (a directory: the tests run as root, which reads a mode-000 file).
    fs::create_dir(harness.rotated(1)).unwrap();
    write_lines(&harness, 0..5);

    harness.drain();

    assert_eq!(
        harness.delivered,
        lines(0..5),
        "the readable file is shipped"
    );
    assert!(
        harness.source_errors(SourceErrorReason::Unreadable) >= 1,
        "the unreadable one is counted, not only logged"
    );
}

#[test]
fn a_new_file_on_a_reused_inode_is_read_from_its_start_after_a_restart() {
    let mut harness = Harness::new(64 * 1024);
    write_lines(&harness, 0..5);
    harness.drain();
    let old_inode = fs::metadata(harness.path()).unwrap().ino();
    // While the shipper is down, the file is replaced by a longer one.
    drop(std::mem::replace(
        &mut harness.tailer,
        open(
            &harness.dir.path().join("elsewhere"),
            &Checkpoint::default(),
            1024,
            &LogshipMetrics::new(),
        ),
    ));
    // Emptied in place and rewritten: the same inode for certain (deleting
    // and re-creating leaves reuse to the file system, which under parallel
    // tests hands the freed inode to someone else). An inode-based tailer
    // would resume at the old offset; the fingerprint tells the files apart.
    fs::write(harness.path(), b"").unwrap();
    write_lines(&harness, 100..110);
    let new_inode = fs::metadata(harness.path()).unwrap().ino();
    assert_eq!(old_inode, new_inode, "the case under test: the same inode");

    harness.restart();
    harness.drain();

    let mut expected = lines(0..5);
    expected.extend(lines(100..110));
    assert_eq!(harness.delivered, expected);
}

#[test]
fn a_partial_last_line_is_held_until_complete_and_shipped_once() {
    let mut harness = Harness::new(64 * 1024);
    write_lines(&harness, 0..2);
    harness.append("{\"msg\":\"half");
    harness.drain();
    assert_eq!(harness.delivered, lines(0..2));
    // A restart in between: the half line is read again from the checkpoint.
    harness.restart();
    harness.drain();
    harness.append(" and the rest\"}\n");
    harness.drain();
    let mut expected = lines(0..2);
    expected.push("{\"msg\":\"half and the rest\"}".to_string());
    assert_eq!(harness.delivered, expected);
}

#[test]
fn at_shutdown_the_unterminated_last_line_is_handed_over_without_moving_the_checkpoint() {
    let mut harness = Harness::new(64 * 1024);
    write_lines(&harness, 0..2);
    harness.append("{\"msg\":\"half");
    harness.drain();
    let acknowledged = harness.checkpoint.position(&harness.path());

    let mut lines = Vec::new();
    let taken = harness.tailer.take_unterminated(&mut lines);

    assert_eq!(taken, 1);
    assert_eq!(lines[0].bytes, b"{\"msg\":\"half");
    assert_eq!(harness.checkpoint.position(&harness.path()), acknowledged);
    // Handed over once: a second call has nothing.
    assert_eq!(harness.tailer.take_unterminated(&mut lines), 0);
}

#[test]
fn identical_lines_of_two_files_carry_different_file_ids_that_survive_a_restart() {
    let mut first = Harness::new(64 * 1024);
    let mut second = Harness::new(64 * 1024);
    // Two replicas: different first lines, then the same line at the same offset.
    first.append("{\"msg\":\"started\",\"hostname\":\"pod-a\"}\n");
    second.append("{\"msg\":\"started\",\"hostname\":\"pod-b\"}\n");
    for harness in [&first, &second] {
        harness.append("{\"msg\":\"same\"}\n");
    }
    let read_all = |harness: &mut Harness| {
        let mut lines = Vec::new();
        let mut positions = BTreeMap::new();
        harness
            .tailer
            .read(100, 1 << 20, &mut lines, &mut positions)
            .expect("reads");
        lines
    };

    let in_first = read_all(&mut first);
    let in_second = read_all(&mut second);
    // The first file grows past the fingerprint size, and the shipper restarts
    // before acknowledging: the line read again keeps its file id.
    first.append(&"x".repeat(2048));
    first.append("\n");
    first.restart();
    let again = read_all(&mut first);

    assert_eq!(in_first[1].bytes, in_second[1].bytes);
    assert_eq!(in_first[1].end_offset, in_second[1].end_offset);
    assert_ne!(in_first[1].file_id, in_second[1].file_id);
    assert_eq!(again[1].bytes, in_first[1].bytes);
    assert_eq!(again[1].file_id, in_first[1].file_id);
}

#[test]
fn a_partial_last_line_of_a_rotated_file_is_shipped_as_is() {
    let mut harness = Harness::new(64 * 1024);
    write_lines(&harness, 0..2);
    harness.append("cut short");
    harness.drain();
    harness.rotate();
    write_lines(&harness, 2..4);
    harness.drain();
    let mut expected = lines(0..2);
    expected.push("cut short".to_string());
    expected.extend(lines(2..4));
    assert_eq!(harness.delivered, expected);
}

#[test]
fn an_oversized_line_is_cut_and_the_next_line_is_intact() {
    let mut harness = Harness::new(100);
    let long = "x".repeat(250_000);
    harness.append(&format!("{}\n{long}\n{}\n", record(0), record(1)));
    harness.drain();
    assert_eq!(harness.delivered.len(), 3);
    assert_eq!(harness.delivered[0], record(0));
    assert_eq!(harness.delivered[1], "x".repeat(100));
    assert_eq!(harness.delivered[2], record(1));
}

#[test]
fn a_crash_before_the_acknowledgement_repeats_only_that_batch() {
    let mut harness = Harness::new(64 * 1024);
    write_lines(&harness, 0..10);
    harness.drain();
    write_lines(&harness, 10..20);
    assert_eq!(harness.read_unacknowledged(), 3);
    harness.restart();
    harness.drain();
    assert_eq!(harness.delivered, lines(0..20));
}

#[test]
fn a_missing_checkpoint_starts_at_the_end_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    fs::write(&path, format!("{}\n{}\npartial", record(0), record(1))).unwrap();
    let (mut tailer, resumed) = Tailer::open(
        TailerOptions {
            paths: vec![path.clone()],
            start_at: StartAt::End,
            max_line_bytes: 1024,
            fingerprint_bytes: 1024,
            max_rotated_files: 3,
            metrics: LogshipMetrics::new(),
        },
        &|_| None,
    );
    assert_eq!(resumed.fresh, 1);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(format!(" line\n{}\n", record(2)).as_bytes())
        .unwrap();
    let mut lines = Vec::new();
    tailer
        .read(100, 1 << 20, &mut lines, &mut BTreeMap::new())
        .unwrap();
    let texts: Vec<String> = lines
        .iter()
        .map(|line| String::from_utf8(line.bytes.clone()).unwrap())
        .collect();
    // Starts after the last complete line: the partial one is not cut in half.
    assert_eq!(texts, vec!["partial line".to_string(), record(2)]);
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Rotate,
    CopyTruncate,
    Drain,
    Restart,
    /// A batch read and never acknowledged, then a restart (kill -9).
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..6).prop_map(Op::Write),
        1 => Just(Op::Rotate),
        1 => Just(Op::CopyTruncate),
        2 => Just(Op::Drain),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Model: the writer's lines in order. Whatever the interleaving of
    /// writes, rotations (at most MAX_FILES between two reads, as the app
    /// keeps MAX_FILES), copytruncates and restarts from the acknowledged
    /// checkpoint, the tailer delivers exactly the written lines, in order,
    /// each once (lines read but not acknowledged before a crash are not
    /// delivered, and are read again). One precondition, inherent to copytruncate: the tailer
    /// has read a line of the file before it is truncated (otherwise the
    /// copy is a file it has never seen and cannot tell from any other).
    #[test]
    fn the_tailer_delivers_every_line_once_in_order(ops in proptest::collection::vec(op(), 1..40)) {
        let mut harness = Harness::new(64 * 1024);
        let mut written = 0;
        let mut rotations_since_read = 0;
        // Lines in the live file, and whether the tailer has read one of them.
        let mut live_lines = 0;
        let mut live_file_seen = false;
        for op in ops {
            match op {
                Op::Write(count) => {
                    write_lines(&harness, written..written + count);
                    written += count;
                    live_lines += count;
                }
                Op::Rotate | Op::CopyTruncate => {
                    if rotations_since_read == MAX_FILES
                        || (matches!(op, Op::CopyTruncate) && live_lines > 0 && !live_file_seen)
                    {
                        // Beyond MAX_FILES the app deletes unread files: a
                        // real loss, not the tailer's; and see above.
                        harness.drain();
                        rotations_since_read = 0;
                    }
                    if !harness.path().exists() {
                        fs::write(harness.path(), b"").unwrap();
                    }
                    if matches!(op, Op::Rotate) { harness.rotate() } else { harness.copytruncate() }
                    rotations_since_read += 1;
                    live_lines = 0;
                    live_file_seen = false;
                }
                Op::Drain => {
                    harness.drain();
                    rotations_since_read = 0;
                    live_file_seen = live_lines > 0;
                }
                Op::Restart => harness.restart(),
                Op::Crash => {
                    harness.read_unacknowledged();
                    harness.restart();
                }
            }
        }
        harness.drain();
        prop_assert_eq!(harness.delivered.clone(), lines(0..written));
    }
}
