//! The log file with size-based rotation that the sidecar's log shipper tails.
//!
//! When writing a line would take `app.log` past `max_bytes`, the files are
//! shifted (`app.log.N-1` → `app.log.N`, …, `app.log` → `app.log.1`), the
//! oldest beyond `max_files` rotated files is removed, and a new `app.log` is
//! opened. Rotation only happens between writes, and the logging worker
//! writes one whole line per call, so no line is ever split across files.
//!
//! Lines are gathered in memory and written to the file by `flush` (or when
//! [`WRITE_BUFFER_BYTES`] are waiting, or before a rotation), so a burst of
//! lines costs one `write(2)`, not one per line.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use todo_common::metrics::telemetry_counters;
// Bytes of whole lines gathered before they are written: as stdout's writer.
use todo_common::telemetry::WRITE_BUFFER_BYTES;

/// An append-only log file that rotates by size. Not thread-safe by itself:
/// it sits behind `tracing-appender`'s single writer thread.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: usize,
    file: File,
    /// Bytes in the current file, not counting `pending`.
    written: u64,
    /// Whole lines not yet written to the file.
    pending: Vec<u8>,
}

impl RotatingFile {
    /// Opens (appending to) `path`, creating its directory if needed.
    /// `max_files` is the number of rotated files kept besides `path` itself.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64, max_files: usize) -> io::Result<Self> {
        let path = path.into();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let file = open_append(&path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            max_bytes: max_bytes.max(1),
            max_files,
            file,
            written,
            pending: Vec::with_capacity(WRITE_BUFFER_BYTES),
        })
    }

    /// Writes the gathered lines to the file.
    ///
    /// The lines are let go even when the write fails (disk full): they are
    /// dropped and counted in `todo_log_lines_dropped_total`, as an
    /// unbuffered write would drop them, instead of piling up in memory
    /// while the disk stays full.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending);
        if result.is_err() {
            let lines = self.pending.iter().filter(|byte| **byte == b'\n').count();
            telemetry_counters().log_lines_unwritten(lines as u64);
        }
        self.written += self.pending.len() as u64;
        self.pending.clear();
        result
    }

    fn rotated_path(&self, index: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{index}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.file.flush()?;
        if self.max_files == 0 {
            // Nothing is kept: start the file again.
            self.file = File::create(&self.path)?;
            self.written = 0;
            return Ok(());
        }
        let oldest = self.rotated_path(self.max_files);
        if oldest.exists() {
            fs::remove_file(&oldest)?;
        }
        for index in (1..self.max_files).rev() {
            let from = self.rotated_path(index);
            if from.exists() {
                fs::rename(&from, self.rotated_path(index + 1))?;
            }
        }
        fs::rename(&self.path, self.rotated_path(1))?;
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let size = self.written + self.pending.len() as u64;
        if size > 0 && size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        // Kept whole, so the rotation check above always sees line boundaries.
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= WRITE_BUFFER_BYTES {
            self.write_pending()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.file.flush()
    }
}

impl Drop for RotatingFile {
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            eprintln!(
                "could not write the last log lines to {}: {error}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("todo-logfile-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rotation_keeps_every_line_within_max_files() {
        let dir = temp_dir();
        let path = dir.join("app.log");
        let mut file = RotatingFile::open(&path, 100, 50).unwrap();

        for n in 0..200 {
            file.write_all(format!("line {n:04}\n").as_bytes()).unwrap();
        }
        file.flush().unwrap();

        let mut lines = Vec::new();
        for index in (1..=50).rev() {
            if let Ok(text) = fs::read_to_string(format!("{}.{index}", path.display())) {
                lines.extend(text.lines().map(String::from));
            }
        }
        lines.extend(fs::read_to_string(&path).unwrap().lines().map(String::from));
        let expected: Vec<String> = (0..200).map(|n| format!("line {n:04}")).collect();
        assert_eq!(lines, expected, "every line once, in order, none split");
        assert!(fs::metadata(&path).unwrap().len() <= 100);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lines_are_gathered_until_flushed_or_dropped() {
        let dir = temp_dir();
        let path = dir.join("app.log");
        let mut file = RotatingFile::open(&path, 1_000_000, 1).unwrap();

        file.write_all(b"one\n").unwrap();
        file.write_all(b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        file.flush().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");

        file.write_all(b"three\n").unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_full_disk_fails_the_writes_without_piling_lines_up_in_memory() {
        // /dev/full fails every write with ENOSPC. max_bytes is far beyond
        // what is written, so no rotation ever renames the device.
        let mut file = RotatingFile::open("/dev/full", 1 << 40, 1).unwrap();
        let line = format!("{}\n", "x".repeat(1023));
        let mut failures = 0;
        for _ in 0..(4 * WRITE_BUFFER_BYTES / line.len()) {
            if file.write_all(line.as_bytes()).is_err() {
                failures += 1;
            }
            assert!(file.pending.len() <= WRITE_BUFFER_BYTES);
        }
        file.write_all(line.as_bytes()).unwrap();
        assert!(file.flush().is_err(), "the disk-full error is reported");
        assert!(failures > 0, "and on the writes that filled the buffer");
        assert!(file.pending.is_empty(), "the lines that failed are let go");
        assert!(
            telemetry_counters().dropped_log_lines() >= 256,
            "and counted"
        );
    }

    #[test]
    fn the_oldest_files_beyond_max_files_are_removed() {
        let dir = temp_dir();
        let path = dir.join("app.log");
        let mut file = RotatingFile::open(&path, 10, 2).unwrap();

        for n in 0..10 {
            file.write_all(format!("{n:09}\n").as_bytes()).unwrap();
        }
        file.flush().unwrap();

        assert!(dir.join("app.log.1").exists());
        assert!(dir.join("app.log.2").exists());
        assert!(!dir.join("app.log.3").exists());
        assert_eq!(fs::read_to_string(&path).unwrap(), "000000009\n");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reopening_appends_and_counts_the_existing_size() {
        let dir = temp_dir();
        let path = dir.join("logs/app.log");
        RotatingFile::open(&path, 20, 1)
            .unwrap()
            .write_all(b"0123456789\n")
            .unwrap();

        let mut again = RotatingFile::open(&path, 20, 1).unwrap();
        again.write_all(b"abcdefghij\n").unwrap();
        again.flush().unwrap();

        assert_eq!(
            fs::read_to_string(dir.join("logs/app.log.1")).unwrap(),
            "0123456789\n"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "abcdefghij\n");
        fs::remove_dir_all(dir).unwrap();
    }
}
