//! The checkpoint: for each configured path, the fingerprint of the file
//! being read and the offset after the last line every sink acknowledged.
//!
//! Written atomically (a temporary file, fsync, rename over the old one,
//! fsync of the directory) so that a crash leaves either the old or the new
//! checkpoint, never a torn one. Format (JSON, `version` 1):
//! `{"version":1,"files":{"/logs/app.log":{"fingerprint":{"len":1024,"sha256":"…"},"offset":12345}}}`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::events::CheckpointErrorReason;
use super::source::Position;

const VERSION: u32 = 1;

/// The acknowledged position of every path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Position by configured path (as configured).
    pub files: BTreeMap<PathBuf, Position>,
}

/// Why the checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// There is none yet (first start, or deleted).
    #[error("no checkpoint file at {0}")]
    Missing(PathBuf),
    /// It exists but cannot be read or parsed.
    #[error("the checkpoint file {path} is unusable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl LoadError {
    /// The metric label of this error.
    pub fn reason(&self) -> CheckpointErrorReason {
        match self {
            LoadError::Missing(_) => CheckpointErrorReason::Missing,
            LoadError::Corrupt { .. } => CheckpointErrorReason::Corrupt,
        }
    }
}

impl Checkpoint {
    /// The saved position of `path`.
    pub fn position(&self, path: &Path) -> Option<Position> {
        self.files.get(path).copied()
    }

    /// Reads the checkpoint at `path`.
    pub fn load(path: &Path) -> Result<Checkpoint, LoadError> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::Missing(path.to_path_buf()));
            }
            Err(error) => {
                return Err(LoadError::Corrupt {
                    path: path.to_path_buf(),
                    reason: error.to_string(),
                });
            }
        };
        let checkpoint: Checkpoint =
            serde_json::from_slice(&text).map_err(|error| LoadError::Corrupt {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?;
        if checkpoint.version != VERSION {
            return Err(LoadError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("unknown version {}", checkpoint.version),
            });
        }
        Ok(checkpoint)
    }

    /// Records `position` for `path`.
    pub fn set(&mut self, path: &Path, position: Position) {
        self.version = VERSION;
        self.files.insert(path.to_path_buf(), position);
    }

    /// Writes the checkpoint to `path` atomically and durably.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let directory = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(directory).with_context(|| {
            format!(
                "Failed to create the checkpoint directory {}",
                directory.display()
            )
        })?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let body = serde_json::to_vec(&Checkpoint {
            version: VERSION,
            files: self.files.clone(),
        })
        .context("Failed to encode the checkpoint")?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .with_context(|| format!("Failed to create {}", temporary.display()))?;
        file.write_all(&body)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("Failed to write {}", temporary.display()))?;
        drop(file);
        fs::rename(&temporary, path)
            .with_context(|| format!("Failed to rename the checkpoint to {}", path.display()))?;
        // The rename is only durable once the directory entry is.
        File::open(directory)
            .and_then(|directory| directory.sync_all())
            .with_context(|| format!("Failed to fsync {}", directory.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logship::source::Fingerprint;

    #[test]
    fn a_saved_checkpoint_loads_back_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/checkpoint.json");
        let mut checkpoint = Checkpoint::default();
        checkpoint.set(
            Path::new("/logs/app.log"),
            Position {
                fingerprint: Fingerprint {
                    len: 3,
                    sha256: [7; 32],
                },
                offset: 42,
            },
        );

        checkpoint.save(&path).unwrap();

        assert_eq!(Checkpoint::load(&path).unwrap(), checkpoint);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("checkpoint.json")]);
    }

    #[test]
    fn missing_and_corrupt_checkpoints_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        assert_eq!(
            Checkpoint::load(&path).unwrap_err().reason(),
            CheckpointErrorReason::Missing
        );
        fs::write(&path, b"{\"version\":1,\"files\":{\"/a\":{\"fing").unwrap();
        assert_eq!(
            Checkpoint::load(&path).unwrap_err().reason(),
            CheckpointErrorReason::Corrupt
        );
    }
}
