//! The tailer: reads the configured log files line by line, following
//! rotation by rename (the old file is finished through its open handle,
//! then the newer files are read in order) and copytruncate (a file that
//! shrank below the read offset, or whose first bytes changed, is read again
//! from 0).
//!
//! The files after the one being read are found by scanning the path and its
//! rotated siblings, a scan that is checked to have seen them all at one
//! moment (see `open_family`): a scan overtaken by rotations would order
//! them wrongly, and read some twice.
//!
//! Files are identified by a [`Fingerprint`] of their first bytes, never by
//! the inode alone: an inode is reused as soon as a file is deleted, so after
//! a restart "same inode" does not mean "same file". While a file is open its
//! inode cannot be reused, which is why inodes are used at run time only to
//! tell whether the path still names the file being read.
//!
//! The tailer only reads; what has been read is acknowledged by the pipeline
//! (`super::pipeline`), which stores the [`Position`]s in the checkpoint once
//! every sink accepted the lines.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::StartAt;
use super::events::{SourceError, SourceErrorReason};
use crate::metrics::LogshipMetrics;

/// Bytes read from a file at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// What identifies a file: the SHA-256 of its first `len` bytes. A file
/// shorter than the configured fingerprint size has a shorter fingerprint,
/// which grows as the file does; any snapshot of it still identifies the
/// file (its first `len` bytes never change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// How many leading bytes the hash covers.
    pub len: u64,
    /// SHA-256 of those bytes, hex.
    #[serde(with = "hex_bytes")]
    pub sha256: [u8; 32],
}

/// How far a file has been read: its fingerprint and the offset just after
/// the last line taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file.
    pub fingerprint: Fingerprint,
    /// Byte offset after the last line taken.
    pub offset: u64,
}

/// One line read from a file (without its newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Index of the configured path it came from.
    pub path_index: usize,
    /// The bytes, cut to `max_line_bytes` when the line was longer.
    pub bytes: Vec<u8>,
    /// Length of the line in the file; more than `bytes.len()` when cut.
    pub original_len: usize,
    /// Offset just after the line's newline (or its end, for a last line
    /// shipped without one) in the file it came from.
    pub end_offset: u64,
    /// The identity of the file it came from (see [`FileId`]).
    pub file_id: FileId,
}

/// What tells two files apart for the sinks (the Elasticsearch `_id`):
/// a hash of the file's first line (or of its first `fingerprint_bytes`
/// when that line is longer). Unlike the [`Fingerprint`], which grows with a
/// short file, it never changes once the first line is written, so a line
/// read again after a restart gets the same identity.
pub type FileId = [u8; 16];

impl Line {
    /// Whether the line was cut to `max_line_bytes`.
    pub fn truncated(&self) -> bool {
        self.original_len > self.bytes.len()
    }
}

/// What the tailer needs to know.
#[derive(Debug, Clone)]
pub struct TailerOptions {
    /// The live files (`app.log`).
    pub paths: Vec<PathBuf>,
    /// Where a file no checkpoint covers starts.
    pub start_at: StartAt,
    /// Longer lines are cut to this.
    pub max_line_bytes: usize,
    /// Fingerprint size.
    pub fingerprint_bytes: usize,
    /// Rotated siblings looked at (`app.log.1` … `app.log.N`).
    pub max_rotated_files: usize,
    /// Where files it cannot read are counted (`SourceError` events).
    pub metrics: LogshipMetrics,
}

/// What happened while opening the files from a checkpoint, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// Paths resumed at the checkpointed file and offset.
    pub resumed: usize,
    /// Paths whose checkpointed file was not found among the path and its
    /// rotated siblings: every sibling is read from 0.
    pub file_gone: usize,
    /// Paths without a checkpoint entry, started at `start_at`.
    pub fresh: usize,
    /// Paths with a checkpoint entry whose files were being rotated during
    /// every look at start-up (a few scans in a row): the checkpoint is
    /// applied at the first read instead (a file gone is logged then).
    pub deferred: usize,
}

/// The tailer of every configured path.
pub struct Tailer {
    options: TailerOptions,
    paths: Vec<PathState>,
}

/// One configured path: the file being read and the newer files to read after it.
struct PathState {
    path: PathBuf,
    current: Option<OpenFile>,
    /// Files known to be newer than `current`, oldest first.
    next: VecDeque<OpenFile>,
    /// The checkpointed position, until the first file is opened (see
    /// [`PathState::open_first`]).
    resume: Option<Position>,
}

/// An open file and how far it has been read.
struct OpenFile {
    file: File,
    /// (device, inode), to tell whether the path still names this file.
    id: (u64, u64),
    fingerprint: Fingerprint,
    /// Next byte to read.
    read_offset: u64,
    /// Bytes of the line being read, kept up to `max_line_bytes`.
    partial: Vec<u8>,
    /// Bytes of the line being read beyond `max_line_bytes`, dropped.
    overflow: u64,
    /// The configured fingerprint size.
    fingerprint_target: usize,
    /// Known once the first line is complete.
    identity: Option<FileId>,
}

impl OpenFile {
    fn open(path: &Path, fingerprint_bytes: usize) -> io::Result<OpenFile> {
        let file = File::open(path)?;
        let metadata = file.metadata()?;
        let fingerprint = fingerprint_of(&file, fingerprint_bytes)?;
        Ok(OpenFile {
            file,
            id: (metadata.dev(), metadata.ino()),
            fingerprint,
            read_offset: 0,
            partial: Vec::new(),
            overflow: 0,
            fingerprint_target: fingerprint_bytes,
            identity: None,
        })
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Offset of the first byte of the line being read.
    fn line_start(&self) -> u64 {
        self.read_offset - self.partial.len() as u64 - self.overflow
    }

    /// The file's [`FileId`]; before its first line is complete (only for
    /// a fragment shipped at rotation or shutdown), a hash of what is there.
    fn identity(&mut self) -> io::Result<FileId> {
        if let Some(identity) = self.identity {
            return Ok(identity);
        }
        let head = read_head(&self.file, self.fingerprint_target)?;
        let first_line = match head.iter().position(|&byte| byte == b'\n') {
            Some(newline) => Some(&head[..=newline]),
            None if head.len() == self.fingerprint_target => Some(&head[..]),
            None => None,
        };
        let hash = |bytes: &[u8]| -> FileId {
            Sha256::digest(bytes)[..16]
                .try_into()
                .expect("16 of 32 bytes")
        };
        Ok(match first_line {
            Some(bytes) => *self.identity.insert(hash(bytes)),
            None => hash(&head),
        })
    }

    /// [`OpenFile::identity`], or, when the file cannot be read any more,
    /// part of its fingerprint (which still tells it apart).
    fn identity_or_fingerprint(&mut self) -> FileId {
        self.identity().unwrap_or_else(|_| {
            self.fingerprint.sha256[..16]
                .try_into()
                .expect("16 of 32 bytes")
        })
    }
}

/// The fingerprint of an open file, over its first `max_len` bytes at most.
fn fingerprint_of(file: &File, max_len: usize) -> io::Result<Fingerprint> {
    let head = read_head(file, max_len)?;
    Ok(Fingerprint {
        len: head.len() as u64,
        sha256: Sha256::digest(&head).into(),
    })
}

fn read_head(file: &File, max_len: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0; max_len];
    let mut filled = 0;
    while filled < max_len {
        let read = file.read_at(&mut head[filled..], filled as u64)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    head.truncate(filled);
    Ok(head)
}

impl Fingerprint {
    /// Whether `file` starts with the bytes this fingerprint covers.
    fn matches(&self, file: &File) -> io::Result<bool> {
        let head = read_head(file, self.len as usize)?;
        Ok(head.len() as u64 == self.len && <[u8; 32]>::from(Sha256::digest(&head)) == self.sha256)
    }
}

impl PathState {
    /// The rest of the current file, and every file newer than it: those
    /// on disk now, and those known from the last look (`next`) that are
    /// not on disk any more. While a batch is retried nothing is read, so
    /// rotations during a sink outage are seen only on disk; without them
    /// the lag would show the tail of one file while the app fills others.
    fn unread_bytes(&self, max_rotated_files: usize) -> u64 {
        let current = self.current.as_ref().map_or(0, |file| {
            file.len()
                .unwrap_or(0)
                .saturating_sub(file.read_offset)
                .saturating_add(file.partial.len() as u64)
        });
        let on_disk = family_on_disk(&self.path, max_rotated_files);
        let newer = match self.current.as_ref() {
            Some(file) => match on_disk.iter().position(|(id, _)| *id == file.id) {
                Some(at) => &on_disk[..at],
                // Not among the path and its siblings any more (deleted
                // while open): everything on disk came after it.
                None => &on_disk[..],
            },
            None => &on_disk[..],
        };
        let gone: u64 = self
            .next
            .iter()
            .filter(|file| newer.iter().all(|(id, _)| *id != file.id))
            .map(|file| file.len().unwrap_or(0))
            .sum();
        current + newer.iter().map(|(_, len)| len).sum::<u64>() + gone
    }
}

/// How [`PathState::open_first`] went.
enum Opened {
    /// At the checkpointed file and offset.
    AtCheckpoint,
    /// The checkpointed file is gone: every file from its start.
    CheckpointedFileGone,
    /// Without a checkpoint: the oldest file (if any) from its start.
    Oldest,
    /// The files were being rotated during every look: nothing is open yet.
    NotYet,
}

impl PathState {
    /// Opens the first file to read: the checkpointed one at its offset
    /// (`resume`), or else the oldest on disk, with the newer files after it.
    fn open_first(&mut self, options: &TailerOptions) -> Opened {
        let Some(family) = open_family(&self.path, options) else {
            return Opened::NotYet;
        };
        let mut family = VecDeque::from(family);
        let Some(position) = self.resume.take() else {
            self.current = family.pop_front();
            self.next = family;
            return Opened::Oldest;
        };
        let found = family.iter().position(|file| {
            file.len().is_ok_and(|len| len >= position.offset)
                && position.fingerprint.matches(&file.file).unwrap_or(false)
        });
        match found {
            Some(index) => {
                let mut rest = family.split_off(index);
                let mut current = rest.pop_front().expect("index is in range");
                current.read_offset = position.offset;
                self.current = Some(current);
                self.next = rest;
                Opened::AtCheckpoint
            }
            None => {
                // Rotated away beyond the siblings kept (or removed):
                // whatever is left is newer.
                tracing::warn!(
                    path = %self.path.display(),
                    "the checkpointed log file is gone; reading the path and its rotated files from their start"
                );
                self.current = family.pop_front();
                self.next = family;
                Opened::CheckpointedFileGone
            }
        }
    }
}

/// The (device, inode) and size of the path and its rotated siblings that
/// exist, newest first (`app.log`, `app.log.1`, …), without opening them.
fn family_on_disk(path: &Path, max_rotated_files: usize) -> Vec<((u64, u64), u64)> {
    let mut files: Vec<((u64, u64), u64)> = Vec::new();
    for candidate in family_paths(path, max_rotated_files) {
        if let Ok(metadata) = std::fs::metadata(&candidate) {
            let id = (metadata.dev(), metadata.ino());
            // A rename during the scan can show a file twice.
            if files.iter().all(|(seen, _)| *seen != id) {
                files.push((id, metadata.len()));
            }
        }
    }
    files
}

/// `app.log.1` for `app.log` and 1.
fn rotated_path(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// How many times [`open_family`] scans the family before it leaves it to
/// the next look when files moved during every scan.
const FAMILY_SCAN_ATTEMPTS: usize = 4;

/// The path and its rotated siblings that exist, oldest first
/// (`app.log.N`, …, `app.log.1`, `app.log`), opened, as they all stood at
/// one moment; `None` when they were being rotated during each of
/// [`FAMILY_SCAN_ATTEMPTS`] scans (nothing is lost: the next look finds them).
///
/// A scan is not atomic, so it is checked. Scanning upwards (newest first)
/// never skips a file that existed when it began (scanning downwards
/// could): a rotation shifts every file to a higher index, so the scan can
/// only meet a file twice (dropped by its inode). But a file *created*
/// during the scan can overtake it: a new `app.log`, shifted by further
/// rotations while the reader was descheduled, is met at `app.log.2` after
/// the `app.log` met first, which is older, so it would be read before that
/// older file, and again after it as one of the files newer than it. So
/// once the scan is done every name is looked at again: if each still names
/// what the scan found, each file sat at its index from its opening to the
/// check, so all of them did at one moment, and their order by index is the
/// order they were written in. Otherwise something moved: scan again.
fn open_family(path: &Path, options: &TailerOptions) -> Option<Vec<OpenFile>> {
    for _ in 0..FAMILY_SCAN_ATTEMPTS {
        let scan = scan_family(path, options);
        if scan.held_still(path, options.max_rotated_files) {
            scan.report_unreadable(options);
            let mut files = scan.files;
            files.reverse();
            return Some(files);
        }
    }
    tracing::debug!(
        path = %path.display(),
        "log files rotated during every look at them; looking again later"
    );
    None
}

/// One pass over the path and its rotated siblings, newest first.
struct Scan {
    /// The files found, newest first, each once.
    files: Vec<OpenFile>,
    /// What each name (`app.log`, `app.log.1`, …) named when it was opened.
    names: Vec<Option<(u64, u64)>>,
    /// Files of the family that could not be opened or read.
    unreadable: Vec<(PathBuf, io::Error)>,
}

impl Scan {
    /// Whether every name still names what the scan found (or nothing).
    fn held_still(&self, path: &Path, max_rotated_files: usize) -> bool {
        family_paths(path, max_rotated_files)
            .map(|candidate| file_id(&candidate))
            .eq(self.names.iter().copied())
    }

    /// Counts the files that could not be read (`SourceError` events).
    fn report_unreadable(&self, options: &TailerOptions) {
        for (candidate, error) in &self.unreadable {
            SourceError {
                reason: SourceErrorReason::Unreadable,
                path: candidate,
                error: Some(error),
            }
            .emit(&options.metrics);
        }
    }
}

/// Opens the path and its rotated siblings, newest first. The order of the
/// files holds only if nothing was rotated meanwhile ([`open_family`]).
fn scan_family(path: &Path, options: &TailerOptions) -> Scan {
    let mut scan = Scan {
        files: Vec::new(),
        names: Vec::new(),
        unreadable: Vec::new(),
    };
    for (index, candidate) in family_paths(path, options.max_rotated_files).enumerate() {
        match OpenFile::open(&candidate, options.fingerprint_bytes) {
            Ok(file) => {
                scan.names.push(Some(file.id));
                if scan.files.iter().all(|seen| seen.id != file.id) {
                    scan.files.push(file);
                }
            }
            // A gap: a rename in progress, or fewer files than the maximum.
            Err(error) if error.kind() == io::ErrorKind::NotFound => scan.names.push(None),
            Err(error) => {
                scan.names.push(file_id(&candidate));
                scan.unreadable.push((candidate, error));
            }
        }
        after_scan_step(index);
    }
    scan
}

/// `app.log`, `app.log.1`, …, `app.log.N`.
fn family_paths(path: &Path, max_rotated_files: usize) -> impl Iterator<Item = PathBuf> + '_ {
    (0..=max_rotated_files).map(move |index| {
        if index == 0 {
            path.to_path_buf()
        } else {
            rotated_path(path, index)
        }
    })
}

/// The (device, inode) `path` names now, if it names anything.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

/// What a test runs after each step of a family scan (see `SCAN_STEP_HOOK`).
#[cfg(test)]
type ScanStepHook = Box<dyn FnMut(usize)>;

#[cfg(test)]
thread_local! {
    /// Tests only: called with each index a scan of the family has just
    /// looked at, so that a test can rotate files in the middle of a scan
    /// (what a reader descheduled while the app rotates sees) without
    /// depending on timing.
    static SCAN_STEP_HOOK: std::cell::RefCell<Option<ScanStepHook>> =
        const { std::cell::RefCell::new(None) };
}

/// The test seam of a family scan (see `SCAN_STEP_HOOK`); nothing outside tests.
fn after_scan_step(index: usize) {
    #[cfg(test)]
    SCAN_STEP_HOOK.with_borrow_mut(|hook| {
        if let Some(hook) = hook.as_mut() {
            hook(index);
        }
    });
    #[cfg(not(test))]
    let _ = index;
}

impl Tailer {
    /// Opens every path, resuming at the position `saved` gives for it (the
    /// checkpoint's; see [`Resumed`]). The tailer does not know where
    /// positions are kept: the pipeline owns the checkpoint.
    pub fn open(
        options: TailerOptions,
        saved: &dyn Fn(&Path) -> Option<Position>,
    ) -> (Tailer, Resumed) {
        let mut resumed = Resumed::default();
        let paths = options
            .paths
            .iter()
            .map(|path| {
                let mut state = PathState {
                    path: path.clone(),
                    current: None,
                    next: VecDeque::new(),
                    resume: saved(path),
                };
                if state.resume.is_some() {
                    match state.open_first(&options) {
                        Opened::AtCheckpoint => resumed.resumed += 1,
                        Opened::CheckpointedFileGone => resumed.file_gone += 1,
                        Opened::NotYet => resumed.deferred += 1,
                        Opened::Oldest => unreachable!("a checkpoint is resumed"),
                    }
                    return state;
                }
                resumed.fresh += 1;
                match options.start_at {
                    // Everything still on disk, oldest rotated file first
                    // (if the files are rotating now, at the first read).
                    StartAt::Beginning => {
                        state.open_first(&options);
                    }
                    StartAt::End => {
                        state.current =
                            OpenFile::open(path, options.fingerprint_bytes)
                                .ok()
                                .map(|mut file| {
                                    file.read_offset = end_of_last_line(&file).unwrap_or(0);
                                    file
                                });
                    }
                }
                state
            })
            .collect();
        (Tailer { options, paths }, resumed)
    }

    /// Reads the lines available now into `lines`, stopping once about
    /// `max_lines` or `max_bytes` were added (a batch may exceed them by the
    /// last line of a rotated file), and records in `positions` where each
    /// path now stands. Returns whether anything was consumed.
    pub fn read(
        &mut self,
        max_lines: usize,
        max_bytes: usize,
        lines: &mut Vec<Line>,
        positions: &mut BTreeMap<usize, Position>,
    ) -> io::Result<bool> {
        let mut budget = Budget {
            lines: max_lines,
            bytes: max_bytes,
        };
        let mut consumed = false;
        for index in 0..self.paths.len() {
            consumed |= self.read_path(index, &mut budget, lines, positions)?;
            if budget.exhausted() {
                break;
            }
        }
        Ok(consumed)
    }

    fn read_path(
        &mut self,
        index: usize,
        budget: &mut Budget,
        lines: &mut Vec<Line>,
        positions: &mut BTreeMap<usize, Position>,
    ) -> io::Result<bool> {
        PathReader {
            state: &mut self.paths[index],
            index,
            options: &self.options,
            budget,
            lines,
            positions,
            consumed: false,
        }
        .read()
    }
    /// Bytes in the files that have not been read yet (the current files'
    /// unread tails and the newer files waiting behind them).
    pub fn unread_bytes(&self) -> u64 {
        self.paths
            .iter()
            .map(|state| state.unread_bytes(self.options.max_rotated_files))
            .sum()
    }

    /// Hands over the unterminated last line of every current file, for the
    /// drain at shutdown: its writer is gone, so it will not be completed.
    /// No position moves past it: if the writer does come back and finishes
    /// the line, the whole line is shipped after the restart (at least once).
    /// Returns how many lines were added.
    pub fn take_unterminated(&mut self, lines: &mut Vec<Line>) -> usize {
        let mut taken = 0;
        for (index, state) in self.paths.iter_mut().enumerate() {
            let Some(file) = state.current.as_mut() else {
                continue;
            };
            if file.partial.is_empty() && file.overflow == 0 {
                continue;
            }
            let original_len = file.partial.len() + file.overflow as usize;
            let file_id = file.identity_or_fingerprint();
            file.overflow = 0;
            lines.push(Line {
                path_index: index,
                bytes: std::mem::take(&mut file.partial),
                original_len,
                end_offset: file.read_offset,
                file_id,
            });
            taken += 1;
        }
        taken
    }

    /// The configured paths, by index.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.paths.iter().map(|state| state.path.clone()).collect()
    }
}

/// Reading one configured path within a batch's budget: the file being
/// read, then the files rotated in after it, in order.
struct PathReader<'a> {
    state: &'a mut PathState,
    index: usize,
    options: &'a TailerOptions,
    budget: &'a mut Budget,
    lines: &'a mut Vec<Line>,
    positions: &'a mut BTreeMap<usize, Position>,
    /// Whether anything was read (or a position moved).
    consumed: bool,
}

impl PathReader<'_> {
    /// The rotation logic: read the current file to its end; then move to
    /// the next newer file if it was rotated away, or else look at what the
    /// path names now (unchanged: done; truncated: start again; renamed:
    /// finish the old file through its handle, then find the newer ones).
    fn read(mut self) -> io::Result<bool> {
        while !self.budget.exhausted() {
            if self.state.current.is_none() {
                // Nothing open yet: the checkpointed file, if the files were
                // rotating when the tailer started; or else files that have
                // appeared, which are new: from their start, oldest first
                // (the first one may have been rotated already).
                self.state.open_first(self.options);
                if self.state.current.is_none() {
                    break;
                }
            }
            if self.read_current()? {
                continue;
            }
            if !self.state.next.is_empty() {
                self.move_to_newer()?;
                continue;
            }
            let current = self.state.current.as_mut().expect("current is open");
            match check_path(&self.state.path, current, self.options)? {
                PathCheck::Unchanged => break,
                PathCheck::Truncated => self.restart_truncated()?,
                PathCheck::Rotated => {
                    // The writer may have appended between our last read and
                    // the rename: finish the old file through its handle
                    // before looking for the newer ones.
                    if self.read_current()? {
                        continue;
                    }
                    if !self.find_newer() {
                        break;
                    }
                }
            }
        }
        Ok(self.consumed)
    }

    /// Reads one chunk of the current file, starting again if it was found
    /// replaced (copytruncate). False at its end.
    fn read_current(&mut self) -> io::Result<bool> {
        let current = self.state.current.as_mut().expect("current is open");
        let chunk = read_chunk(
            current,
            self.index,
            self.options.max_line_bytes,
            self.budget,
            self.lines,
            self.positions,
        )?;
        match chunk {
            Chunk::Read => self.consumed = true,
            Chunk::Replaced => self.restart_truncated()?,
            Chunk::End => return Ok(false),
        }
        Ok(true)
    }

    /// The current file was rotated away and read to its end: nothing more
    /// will be written to it. Ships its unterminated last line and moves to
    /// the next newer file.
    fn move_to_newer(&mut self) -> io::Result<()> {
        let mut finished = self.state.current.take().expect("current is open");
        self.consumed |= flush_partial(&mut finished, self.index, self.lines, self.positions);
        self.state.current = self.state.next.pop_front();
        if let Some(next) = self.state.current.as_mut() {
            refresh_fingerprint(next)?;
            // An empty file's fingerprint would match any file: the old
            // file's end stays the position until a line is read.
            if next.fingerprint.len > 0 {
                self.positions.insert(
                    self.index,
                    Position {
                        fingerprint: next.fingerprint,
                        offset: next.read_offset,
                    },
                );
            }
        }
        Ok(())
    }

    /// The path names another file now: the files newer than the current
    /// one (found by inode) are read after it. False if the new file is not
    /// there yet (renamed, not created again), or if the files were being
    /// rotated during every look (the next look finds them).
    fn find_newer(&mut self) -> bool {
        let current_id = self.state.current.as_ref().expect("current is open").id;
        let Some(family) = open_family(&self.state.path, self.options) else {
            return false;
        };
        let newer_from = family
            .iter()
            .position(|file| file.id == current_id)
            .map_or(0, |at| at + 1);
        self.state.next = family.into_iter().skip(newer_from).collect();
        if self.state.next.is_empty() {
            return false;
        }
        tracing::info!(path = %self.state.path.display(), newer_files = self.state.next.len(), "log file rotated");
        true
    }

    fn restart_truncated(&mut self) -> io::Result<()> {
        self.consumed |= restart_truncated(
            self.state,
            self.index,
            self.options,
            self.lines,
            self.positions,
        )?;
        Ok(())
    }
}

struct Budget {
    lines: usize,
    bytes: usize,
}

impl Budget {
    fn exhausted(&self) -> bool {
        self.lines == 0 || self.bytes == 0
    }

    fn take(&mut self, bytes: usize) {
        self.lines = self.lines.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes.max(1));
    }
}

/// What one read of a file gave.
enum Chunk {
    /// Bytes were consumed.
    Read,
    /// Nothing new.
    End,
    /// The file no longer starts as it did: truncated and written again
    /// (copytruncate), so the bytes at our offset are not what follows
    /// what was read.
    Replaced,
}

/// The current file was truncated (or truncated and written again).
/// copytruncate leaves a copy (a rotated sibling with the old fingerprint)
/// holding what was not read yet: finish it first, then read the truncated
/// file from 0. Without a copy, the held partial line is shipped as is.
fn restart_truncated(
    state: &mut PathState,
    index: usize,
    options: &TailerOptions,
    lines: &mut Vec<Line>,
    positions: &mut BTreeMap<usize, Position>,
) -> io::Result<bool> {
    let current = state.current.as_mut().expect("called with a current file");
    let line_start = current.line_start();
    let old_fingerprint = current.fingerprint;
    let current_id = current.id;
    // Any order will do: the copy is found by its fingerprint.
    let scan = scan_family(&state.path, options);
    scan.report_unreadable(options);
    let copy = scan.files.into_iter().rev().find(|file| {
        file.id != current_id
            && file.len().is_ok_and(|len| len >= line_start)
            && old_fingerprint.matches(&file.file).unwrap_or(false)
    });
    if copy.is_some() {
        tracing::info!(path = %state.path.display(), "log file truncated; its copy is read to the end, then the file again from the start");
    } else {
        // The unread tail is gone: the copy is named otherwise (dateext,
        // .gz) or beyond logship.max_rotated_files.
        SourceError {
            reason: SourceErrorReason::TruncatedUnread,
            path: &state.path,
            error: None,
        }
        .emit(&options.metrics);
    }
    let mut consumed = false;
    match copy {
        Some(mut copy) => {
            current.partial.clear();
            current.overflow = 0;
            copy.read_offset = line_start;
            let mut truncated = state.current.take().expect("current is open");
            truncated.read_offset = 0;
            truncated.fingerprint = fingerprint_of(&truncated.file, options.fingerprint_bytes)?;
            state.current = Some(copy);
            state.next.push_front(truncated);
        }
        None => {
            consumed |= flush_partial(current, index, lines, positions);
            current.read_offset = 0;
            current.fingerprint = fingerprint_of(&current.file, options.fingerprint_bytes)?;
            if current.fingerprint.len > 0 {
                positions.insert(
                    index,
                    Position {
                        fingerprint: current.fingerprint,
                        offset: 0,
                    },
                );
            }
        }
    }
    Ok(consumed)
}

enum PathCheck {
    /// The path still names the file, which did not shrink.
    Unchanged,
    /// The file shrank below the read offset, or its first bytes changed.
    Truncated,
    /// The path names another file now (or the fingerprint grew wrong).
    Rotated,
}

/// At the end of `current`: has it been rotated away or truncated? Also
/// grows the fingerprint of a file that was shorter than the fingerprint size.
fn check_path(
    path: &Path,
    current: &mut OpenFile,
    options: &TailerOptions,
) -> io::Result<PathCheck> {
    let len = current.len()?;
    if len < current.read_offset {
        return Ok(PathCheck::Truncated);
    }
    if (current.fingerprint.len as usize) < options.fingerprint_bytes || current.read_offset > 0 {
        if !current.fingerprint.matches(&current.file)? {
            // Truncated and written again past our offset since we looked.
            return Ok(PathCheck::Truncated);
        }
        if (current.fingerprint.len as usize) < options.fingerprint_bytes
            && len > current.fingerprint.len
        {
            current.fingerprint = fingerprint_of(&current.file, options.fingerprint_bytes)?;
        }
    }
    match std::fs::metadata(path) {
        Ok(metadata) if (metadata.dev(), metadata.ino()) != current.id => Ok(PathCheck::Rotated),
        Ok(_) => Ok(PathCheck::Unchanged),
        // Renamed away and not created again yet: finish this one; the
        // next look finds the new file.
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(PathCheck::Rotated),
        Err(error) => Err(error),
    }
}

/// Reads one chunk of `file` and splits it into lines. Returns whether any
/// byte was consumed.
fn read_chunk(
    file: &mut OpenFile,
    path_index: usize,
    max_line_bytes: usize,
    budget: &mut Budget,
    lines: &mut Vec<Line>,
    positions: &mut BTreeMap<usize, Position>,
) -> io::Result<Chunk> {
    let mut buffer = vec![0; CHUNK_BYTES.min(budget.bytes.max(max_line_bytes + 1))];
    let read = file.file.read_at(&mut buffer, file.read_offset)?;
    if read == 0 {
        return Ok(Chunk::End);
    }
    // Checked after the read: if the file still starts with the same bytes
    // now, it did when the chunk was read (a truncation in between would
    // have changed them), so the chunk continues what was read.
    if !file.fingerprint.matches(&file.file)? {
        return Ok(Chunk::Replaced);
    }
    let chunk = &buffer[..read];
    let chunk_start = file.read_offset;
    let mut at = 0;
    let mut last_end = None;
    while at < chunk.len() && !budget.exhausted() {
        match chunk[at..].iter().position(|&byte| byte == b'\n') {
            Some(newline) => {
                let segment = &chunk[at..at + newline];
                let file_id = file.identity()?;
                let line_bytes = take_line(file, segment, max_line_bytes);
                let end_offset = chunk_start + (at + newline + 1) as u64;
                let at_line = (path_index, end_offset, file_id);
                push_line(line_bytes, at_line, budget, lines);
                last_end = Some(end_offset);
                at += newline + 1;
            }
            None => {
                append_partial(file, &chunk[at..], max_line_bytes);
                at = chunk.len();
            }
        }
    }
    file.read_offset = chunk_start + at as u64;
    // A file opened while shorter than the fingerprint size gets its full
    // fingerprint as soon as it is long enough, so that the checkpoint
    // never holds a fingerprint that many files would match.
    refresh_fingerprint(file)?;
    if let Some(offset) = last_end {
        positions.insert(
            path_index,
            Position {
                fingerprint: file.fingerprint,
                offset,
            },
        );
    }
    Ok(if at > 0 { Chunk::Read } else { Chunk::End })
}

/// The line ending with `segment`: the held partial bytes plus the segment,
/// cut to `max_line_bytes`, with its original length.
fn take_line(file: &mut OpenFile, segment: &[u8], max_line_bytes: usize) -> (Vec<u8>, usize) {
    if file.partial.is_empty() && file.overflow == 0 {
        let kept = segment.len().min(max_line_bytes);
        return (segment[..kept].to_vec(), segment.len());
    }
    append_partial(file, segment, max_line_bytes);
    let original = file.partial.len() + file.overflow as usize;
    file.overflow = 0;
    (std::mem::take(&mut file.partial), original)
}

fn append_partial(file: &mut OpenFile, bytes: &[u8], max_line_bytes: usize) {
    let room = max_line_bytes.saturating_sub(file.partial.len());
    let kept = bytes.len().min(room);
    file.partial.extend_from_slice(&bytes[..kept]);
    file.overflow += (bytes.len() - kept) as u64;
}

fn push_line(
    (bytes, original_len): (Vec<u8>, usize),
    (path_index, end_offset, file_id): (usize, u64, FileId),
    budget: &mut Budget,
    lines: &mut Vec<Line>,
) {
    // An empty line carries nothing; its position still counts as read.
    if original_len == 0 {
        return;
    }
    budget.take(bytes.len());
    lines.push(Line {
        path_index,
        bytes,
        original_len,
        end_offset,
        file_id,
    });
}

/// Gives a file opened while shorter than the fingerprint size its longer
/// fingerprint once it has grown, so that a checkpoint never holds a short
/// fingerprint that other files could match.
fn refresh_fingerprint(file: &mut OpenFile) -> io::Result<()> {
    if (file.fingerprint.len as usize) < file.fingerprint_target
        && file.len()? > file.fingerprint.len
    {
        file.fingerprint = fingerprint_of(&file.file, file.fingerprint_target)?;
    }
    Ok(())
}

/// Ships the held partial line of a file that will not grow any more.
fn flush_partial(
    file: &mut OpenFile,
    path_index: usize,
    lines: &mut Vec<Line>,
    positions: &mut BTreeMap<usize, Position>,
) -> bool {
    if file.partial.is_empty() && file.overflow == 0 {
        return false;
    }
    debug_assert!(file.line_start() <= file.read_offset);
    let original_len = file.partial.len() + file.overflow as usize;
    let file_id = file.identity_or_fingerprint();
    file.overflow = 0;
    lines.push(Line {
        path_index,
        bytes: std::mem::take(&mut file.partial),
        original_len,
        end_offset: file.read_offset,
        file_id,
    });
    positions.insert(
        path_index,
        Position {
            fingerprint: file.fingerprint,
            offset: file.read_offset,
        },
    );
    true
}

/// Offset just after the last newline of `file` (looking back at most 1 MiB),
/// so that starting at the end never ships half a line.
fn end_of_last_line(file: &OpenFile) -> io::Result<u64> {
    let len = file.len()?;
    let window = len.min(1024 * 1024);
    let mut tail = vec![0; window as usize];
    file.file.read_exact_at(&mut tail, len - window)?;
    Ok(match tail.iter().rposition(|&byte| byte == b'\n') {
        Some(newline) => len - window + newline as u64 + 1,
        None => len,
    })
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("a SHA-256 is 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    //! What happens inside one call of the tailer: the app rotating while
    //! the tailer scans the path's family (a reader descheduled in the
    //! middle of a scan while the writer runs). The tailer between calls is
    //! tested against real files in `tests/sidecar/logship_tailer.rs`.

    use std::fs::{self, OpenOptions};
    use std::io::Write;

    use super::*;

    /// Rotated files the app keeps (and the tailer looks at).
    const MAX_FILES: usize = 20;

    /// A unique line.
    fn record(number: usize) -> String {
        format!(r#"{{"msg":"request","n":{number},"time":"2026-01-01T00:00:00.{number:06}Z"}}"#)
    }

    fn records(numbers: std::ops::Range<usize>) -> Vec<String> {
        numbers.map(record).collect()
    }

    /// Appends the records `numbers` to `dir/app.log`.
    fn write(dir: &Path, numbers: std::ops::Range<usize>) {
        let text: String = numbers.map(|number| record(number) + "\n").collect();
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("app.log"))
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .expect("appends to app.log");
    }

    /// todo-app's rotation: app.log.N-1 → app.log.N, …, app.log →
    /// app.log.1, then a new app.log.
    fn rotate(dir: &Path) {
        let rotated = |index: usize| dir.join(format!("app.log.{index}"));
        let _ = fs::remove_file(rotated(MAX_FILES));
        for index in (1..MAX_FILES).rev() {
            let _ = fs::rename(rotated(index), rotated(index + 1));
        }
        fs::rename(dir.join("app.log"), rotated(1)).expect("renames app.log");
        fs::write(dir.join("app.log"), b"").expect("creates app.log");
    }

    /// In each of the next `scans` scans of the family, once the scan has
    /// looked at `app.log`: `rotations` rotations, each new file getting
    /// three records from `first_number` on.
    fn rotate_during_scans(dir: &Path, scans: usize, rotations: usize, first_number: usize) {
        let dir = dir.to_path_buf();
        let mut scans_left = scans;
        let mut number = first_number;
        SCAN_STEP_HOOK.set(Some(Box::new(move |index| {
            if index != 0 || scans_left == 0 {
                return;
            }
            scans_left -= 1;
            for _ in 0..rotations {
                rotate(&dir);
                write(&dir, number..number + 3);
                number += 3;
            }
        })));
    }

    fn tailer(dir: &Path, saved: Option<Position>) -> (Tailer, Resumed) {
        Tailer::open(
            TailerOptions {
                paths: vec![dir.join("app.log")],
                start_at: StartAt::Beginning,
                max_line_bytes: 64 * 1024,
                fingerprint_bytes: 1024,
                max_rotated_files: MAX_FILES,
                metrics: LogshipMetrics::new(),
            },
            &|_| saved,
        )
    }

    /// Everything the tailer reads until it has nothing more (in batches of
    /// three lines), as text; `acknowledged` follows the positions.
    fn read_all(tailer: &mut Tailer, acknowledged: &mut Option<Position>) -> Vec<String> {
        let mut texts = Vec::new();
        loop {
            let mut lines = Vec::new();
            let mut positions = BTreeMap::new();
            let consumed = tailer
                .read(3, 64 * 1024, &mut lines, &mut positions)
                .expect("reads");
            texts.extend(
                lines
                    .iter()
                    .map(|line| String::from_utf8(line.bytes.clone()).expect("UTF-8")),
            );
            if let Some(position) = positions.get(&0) {
                *acknowledged = Some(*position);
            }
            if !consumed {
                return texts;
            }
        }
    }

    #[test]
    fn files_created_while_the_tailer_scans_for_newer_ones_are_read_once_in_order() {
        let logs = tempfile::tempdir().expect("creates a temporary directory");
        let dir = logs.path();
        write(dir, 0..3);
        let (mut tailer, _) = tailer(dir, None);
        let mut delivered = read_all(&mut tailer, &mut None);
        // Rotated and written again before the tailer looks: it will scan
        // the family for the files after the one it has read.
        rotate(dir);
        write(dir, 3..6);
        // Once that scan has opened app.log (3..6), the app rotates twice
        // (6..9, then 9..12) before the scan looks at app.log.1.
        rotate_during_scans(dir, 1, 2, 6);

        delivered.extend(read_all(&mut tailer, &mut None));

        assert_eq!(delivered, records(0..12));
    }

    #[test]
    fn a_restart_while_the_files_keep_rotating_resumes_at_the_checkpoint_in_order() {
        let logs = tempfile::tempdir().expect("creates a temporary directory");
        let dir = logs.path();
        write(dir, 0..3);
        let mut acknowledged = None;
        let (mut before, _) = tailer(dir, None);
        assert_eq!(read_all(&mut before, &mut acknowledged), records(0..3));
        drop(before);
        rotate(dir);
        write(dir, 3..6);
        // Every scan the restarted tailer makes while opening sees two
        // rotations in its middle.
        let rotations = 2 * FAMILY_SCAN_ATTEMPTS;
        rotate_during_scans(dir, FAMILY_SCAN_ATTEMPTS, 2, 6);

        let (mut after, resumed) = tailer(dir, acknowledged);
        let delivered = read_all(&mut after, &mut acknowledged);

        assert_eq!(delivered, records(3..6 + 3 * rotations));
        assert_eq!(
            resumed,
            Resumed {
                deferred: 1,
                ..Resumed::default()
            },
            "the files never held still while it opened them"
        );
    }
}
