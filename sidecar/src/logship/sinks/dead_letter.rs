//! The dead-letter file: what a sink refuses (other 4xx, failed `_bulk`
//! items, an OTLP partial success) is written there, one JSON object per
//! line, bounded in size, so that one poison batch cannot stop the pipeline.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;

use crate::logship::config::DeadLetterSettings;
use crate::logship::event::Event;
use crate::logship::events::{DeadLetterOverflow, DeadLetterWriteFailed, LinesDeadLettered};
use crate::metrics::LogshipMetrics;

/// The dead-letter file: one JSON object per refused line
/// (`{"time","sink","reason","line"}`), bounded in size.
pub struct DeadLetter {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<Option<(File, u64)>>,
}

impl DeadLetter {
    /// The dead-letter file of the settings (opened on first use).
    pub fn new(settings: &DeadLetterSettings) -> DeadLetter {
        DeadLetter {
            path: settings.path.clone(),
            max_bytes: settings.max_bytes.max(1),
            file: Mutex::new(None),
        }
    }

    /// Appends `events` refused by `sink` with its `answer` (the record's
    /// `reason`), and counts them.
    /// Never fails: a dead-letter file that cannot be written is logged and
    /// counted, and the pipeline goes on.
    pub fn write(
        &self,
        sink: &'static str,
        answer: &str,
        events: &[&Event],
        metrics: &LogshipMetrics,
    ) {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut records = Vec::new();
        for event in events {
            let record = serde_json::json!({
                "time": time,
                "sink": sink,
                "reason": answer,
                "line": event.text,
            });
            serde_json::to_writer(&mut records, &record).expect("JSON into a Vec");
            records.push(b'\n');
        }
        match self.append(&records) {
            Ok(written) => {
                LinesDeadLettered {
                    sink,
                    lines: written,
                }
                .emit(metrics);
                if written < events.len() {
                    DeadLetterOverflow {
                        sink,
                        path: &self.path,
                        written,
                        dropped: events.len() - written,
                    }
                    .emit(metrics);
                }
            }
            Err(error) => DeadLetterWriteFailed {
                sink,
                path: &self.path,
                error: &format!("{error:#}"),
                lines: events.len(),
            }
            .emit(metrics),
        }
    }

    /// Appends whole records, as many as fit; returns how many were written.
    fn append(&self, records: &[u8]) -> anyhow::Result<usize> {
        let mut guard = self.file.lock().expect("never poisoned");
        if guard.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("Failed to open {}", self.path.display()))?;
            let size = file.metadata()?.len();
            *guard = Some((file, size));
        }
        let (_, size) = guard.as_ref().expect("opened above");
        if *size > 0 && size + records.len() as u64 > self.max_bytes {
            // Keep one previous file: bounded at twice max_bytes.
            let mut previous = self.path.as_os_str().to_owned();
            previous.push(".1");
            fs::rename(&self.path, PathBuf::from(previous))
                .context("Failed to rotate the dead-letter file")?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("Failed to open {}", self.path.display()))?;
            *guard = Some((file, 0));
        }
        let (file, size) = guard.as_mut().expect("opened above");
        // Records beyond the bound (a huge batch refused at once) are left
        // out whole, so that every line in the file stays valid JSON.
        let room = self.max_bytes.saturating_sub(*size) as usize;
        let records = if records.len() <= room {
            records
        } else {
            let fits = records[..room].iter().rposition(|&byte| byte == b'\n');
            &records[..fits.map_or(0, |newline| newline + 1)]
        };
        file.write_all(records)?;
        *size += records.len() as u64;
        Ok(records.iter().filter(|&&byte| byte == b'\n').count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logship::event::test_event as event;

    #[test]
    fn the_dead_letter_file_is_bounded_and_every_record_stays_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.ndjson");
        let dead_letter = DeadLetter::new(&DeadLetterSettings {
            path: path.clone(),
            max_bytes: 1000,
        });
        let metrics = LogshipMetrics::new();
        let events: Vec<Event> = (0..40)
            .map(|n| event(&format!("poison line {n:03}")))
            .collect();

        for chunk in events.chunks(4) {
            let refs: Vec<&Event> = chunk.iter().collect();
            dead_letter.write("loki", "400 Bad Request", &refs, &metrics);
        }

        let current = fs::read_to_string(&path).unwrap();
        let previous = fs::read_to_string(dir.path().join("dead.ndjson.1")).unwrap();
        assert!(current.len() <= 1000 && previous.len() <= 1000);
        let mut lines: Vec<String> = previous
            .lines()
            .chain(current.lines())
            .map(|record| {
                let record: serde_json::Value = serde_json::from_str(record).unwrap();
                assert_eq!(record["sink"], "loki");
                assert_eq!(record["reason"], "400 Bad Request");
                record["line"].as_str().unwrap().to_string()
            })
            .collect();
        // The newest records are kept, in order, and all are counted.
        lines.dedup();
        assert_eq!(lines.last().unwrap(), "poison line 039");
        assert!(lines.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(
            metrics
                .dead_lettered_total
                .with_label_values(&["loki"])
                .get(),
            40
        );
    }

    #[test]
    fn dead_letters_that_do_not_fit_are_counted_as_dropped_not_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.ndjson");
        let dead_letter = DeadLetter::new(&DeadLetterSettings {
            path: path.clone(),
            max_bytes: 300,
        });
        let metrics = LogshipMetrics::new();
        let events: Vec<Event> = (0..10)
            .map(|n| event(&format!("poison line {n:03}")))
            .collect();
        let refs: Vec<&Event> = events.iter().collect();

        dead_letter.write("loki", "413 Payload Too Large", &refs, &metrics);

        let written = fs::read_to_string(&path).unwrap().lines().count();
        assert!(written > 0 && written < 10, "{written} records fit");
        assert_eq!(
            metrics
                .dead_lettered_total
                .with_label_values(&["loki"])
                .get(),
            written as u64
        );
        assert_eq!(
            metrics
                .failures_total
                .with_label_values(&["loki", "dead_letter_overflow"])
                .get(),
            1
        );
    }
}
