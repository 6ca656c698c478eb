//! Where snapshots live: a local directory or S3-compatible object storage.
//!
//! Both keep the same layout under their root (`path`, or `bucket/prefix`):
//! `snapshots/<id>.dump.zst`, `snapshots/<id>.manifest.json`, and
//! `drills/last-success.json`. Writes are all-or-nothing: the local store
//! writes a temporary name, fsyncs and renames; S3 completes a multipart
//! upload only at the end and aborts it on failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt;

use crate::configuration::{StoreKind, StoreSettings};

/// Prefix of the local store's temporary files; never a snapshot name.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Why a store operation failed. Messages name the object, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{name} does not exist in the store")]
    NotFound { name: String },
    #[error("Failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Failed to {action} {name} in S3: {detail}")]
    S3 {
        action: &'static str,
        name: String,
        /// A one-line summary: object_store's own message repeats its
        /// whole chain and the server's XML several times.
        detail: String,
    },
    #[error("the S3 store is misconfigured: {0}")]
    Config(String),
}

/// An object in the store.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Its name relative to the store root (`snapshots/<id>.manifest.json`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: DateTime<Utc>,
}

/// A snapshot store.
#[derive(Clone)]
pub enum Store {
    /// A directory.
    Local(PathBuf),
    /// S3-compatible object storage.
    S3 {
        /// The client.
        client: Arc<AmazonS3>,
        /// `s3://bucket/prefix`, for messages.
        description: String,
        /// Key prefix.
        prefix: String,
        /// Multipart part size.
        part_size: usize,
    },
}

/// A write in progress; nothing is visible under the final name until
/// [`Upload::finish`].
pub enum Upload {
    /// A temporary file, renamed at the end.
    Local {
        file: tokio::fs::File,
        temporary: PathBuf,
        target: PathBuf,
    },
    /// A multipart upload.
    S3 {
        name: String,
        writer: WriteMultipart,
    },
}

impl Store {
    /// Builds the store the settings describe (no I/O yet).
    pub fn from_settings(settings: &StoreSettings) -> Result<Store, StoreError> {
        match settings.kind {
            StoreKind::Local => Ok(Store::Local(settings.path.clone())),
            StoreKind::S3 => build_s3(settings),
        }
    }

    /// Where the store is, for messages (never credentials).
    pub fn describe(&self) -> String {
        match self {
            Store::Local(path) => format!("local directory {}", path.display()),
            Store::S3 { description, .. } => description.clone(),
        }
    }

    fn object_path(prefix: &str, name: &str) -> ObjectPath {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{prefix}/{name}"))
        }
    }

    /// Starts writing `name`.
    pub async fn begin_upload(&self, name: &str) -> Result<Upload, StoreError> {
        match self {
            Store::Local(root) => {
                let target = root.join(name);
                let directory = target
                    .parent()
                    .expect("names have a directory")
                    .to_path_buf();
                tokio::fs::create_dir_all(&directory)
                    .await
                    .map_err(|source| StoreError::Io {
                        action: "create the directory",
                        path: directory.clone(),
                        source,
                    })?;
                let file_name = target
                    .file_name()
                    .expect("names have a file name")
                    .to_string_lossy();
                let temporary = directory.join(format!(
                    "{TEMP_PREFIX}{file_name}.{}",
                    uuid::Uuid::new_v4().simple()
                ));
                let file = tokio::fs::File::create(&temporary)
                    .await
                    .map_err(|source| StoreError::Io {
                        action: "create",
                        path: temporary.clone(),
                        source,
                    })?;
                Ok(Upload::Local {
                    file,
                    temporary,
                    target,
                })
            }
            Store::S3 {
                client,
                prefix,
                part_size,
                ..
            } => {
                let upload = client
                    .put_multipart(&Self::object_path(prefix, name))
                    .await
                    .map_err(|source| StoreError::S3 {
                        action: "start the upload of",
                        name: name.to_string(),
                        detail: summarize(&source),
                    })?;
                Ok(Upload::S3 {
                    name: name.to_string(),
                    writer: WriteMultipart::new_with_chunk_size(upload, *part_size),
                })
            }
        }
    }

    /// Writes a small object all at once, atomically.
    pub async fn put(&self, name: &str, contents: Bytes) -> Result<(), StoreError> {
        match self {
            Store::Local(_) => {
                let mut upload = self.begin_upload(name).await?;
                upload.write(contents).await?;
                upload.finish().await
            }
            Store::S3 { client, prefix, .. } => client
                .put(
                    &Self::object_path(prefix, name),
                    PutPayload::from_bytes(contents),
                )
                .await
                .map(|_| ())
                .map_err(|source| StoreError::S3 {
                    action: "write",
                    name: name.to_string(),
                    detail: summarize(&source),
                }),
        }
    }

    /// Reads a small object whole.
    pub async fn get(&self, name: &str) -> Result<Bytes, StoreError> {
        match self {
            Store::Local(root) => {
                let path = root.join(name);
                tokio::fs::read(&path)
                    .await
                    .map(Bytes::from)
                    .map_err(|source| {
                        if source.kind() == std::io::ErrorKind::NotFound {
                            StoreError::NotFound {
                                name: name.to_string(),
                            }
                        } else {
                            StoreError::Io {
                                action: "read",
                                path,
                                source,
                            }
                        }
                    })
            }
            Store::S3 { client, prefix, .. } => {
                let result = client
                    .get(&Self::object_path(prefix, name))
                    .await
                    .map_err(|source| s3_read_error(name, source))?;
                result
                    .bytes()
                    .await
                    .map_err(|source| s3_read_error(name, source))
            }
        }
    }

    /// Reads an object as a stream of chunks, in bounded memory.
    pub async fn get_stream(
        &self,
        name: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        match self {
            Store::Local(root) => {
                let path = root.join(name);
                let file = tokio::fs::File::open(&path).await.map_err(|source| {
                    if source.kind() == std::io::ErrorKind::NotFound {
                        StoreError::NotFound {
                            name: name.to_string(),
                        }
                    } else {
                        StoreError::Io {
                            action: "open",
                            path: path.clone(),
                            source,
                        }
                    }
                })?;
                let stream =
                    futures_util::stream::unfold((file, path), |(mut file, path)| async move {
                        use tokio::io::AsyncReadExt;
                        let mut buffer = vec![0u8; 1024 * 1024];
                        match file.read(&mut buffer).await {
                            Ok(0) => None,
                            Ok(read) => {
                                buffer.truncate(read);
                                Some((Ok(Bytes::from(buffer)), (file, path)))
                            }
                            Err(source) => Some((
                                Err(StoreError::Io {
                                    action: "read",
                                    path: path.clone(),
                                    source,
                                }),
                                (file, path),
                            )),
                        }
                    });
                Ok(stream.boxed())
            }
            Store::S3 {
                client,
                prefix,
                part_size,
                ..
            } => {
                // Ranged GETs of one part each: a request's timeout covers
                // its body, so one GET of the whole object would fail for a
                // snapshot that takes longer than request_timeout_seconds
                // to read, and that one could never be restored.
                let path = Self::object_path(prefix, name);
                let size = client
                    .head(&path)
                    .await
                    .map_err(|source| s3_read_error(name, source))?
                    .size;
                let range = (*part_size as u64).max(1);
                let (client, name) = (client.clone(), name.to_string());
                let ranges = futures_util::stream::try_unfold(0u64, move |offset| {
                    let (client, path, name) = (client.clone(), path.clone(), name.clone());
                    async move {
                        if offset >= size {
                            return Ok(None);
                        }
                        let end = (offset + range).min(size);
                        let bytes = client
                            .get_range(&path, offset..end)
                            .await
                            .map_err(|source| s3_read_error(&name, source))?;
                        Ok(Some((bytes, end)))
                    }
                });
                Ok(ranges.boxed())
            }
        }
    }

    /// Every object under `directory/` (`snapshots`).
    pub async fn list(&self, directory: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        match self {
            Store::Local(root) => {
                let path = root.join(directory);
                let mut entries = match tokio::fs::read_dir(&path).await {
                    Ok(entries) => entries,
                    // A new store: nothing written yet.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(Vec::new());
                    }
                    Err(source) => {
                        return Err(StoreError::Io {
                            action: "list",
                            path,
                            source,
                        });
                    }
                };
                let mut objects = Vec::new();
                loop {
                    let entry = entries
                        .next_entry()
                        .await
                        .map_err(|source| StoreError::Io {
                            action: "list",
                            path: path.clone(),
                            source,
                        })?;
                    let Some(entry) = entry else { break };
                    let Ok(metadata) = entry.metadata().await else {
                        continue;
                    };
                    if !metadata.is_file() {
                        continue;
                    }
                    let modified = metadata
                        .modified()
                        .map(DateTime::<Utc>::from)
                        .unwrap_or_else(|_| Utc::now());
                    objects.push(ObjectInfo {
                        name: format!("{directory}/{}", entry.file_name().to_string_lossy()),
                        size: metadata.len(),
                        modified,
                    });
                }
                Ok(objects)
            }
            Store::S3 { client, prefix, .. } => {
                let root = Self::object_path(prefix, directory);
                let base = prefix.trim_matches('/');
                let mut listing = client.list(Some(&root));
                let mut objects = Vec::new();
                while let Some(meta) = listing.next().await {
                    let meta = meta.map_err(|source| StoreError::S3 {
                        action: "list",
                        name: format!("{directory}/"),
                        detail: summarize(&source),
                    })?;
                    let key = meta.location.to_string();
                    let name = if base.is_empty() {
                        key
                    } else {
                        key.strip_prefix(&format!("{base}/"))
                            .unwrap_or(&key)
                            .to_string()
                    };
                    objects.push(ObjectInfo {
                        name,
                        size: meta.size,
                        modified: meta.last_modified,
                    });
                }
                Ok(objects)
            }
        }
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Store::Local(root) => {
                let path = root.join(name);
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => Ok(()),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(StoreError::Io {
                        action: "delete",
                        path,
                        source,
                    }),
                }
            }
            Store::S3 { client, prefix, .. } => {
                match client.delete(&Self::object_path(prefix, name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(source) => Err(StoreError::S3 {
                        action: "delete",
                        name: name.to_string(),
                        detail: summarize(&source),
                    }),
                }
            }
        }
    }
}

fn s3_read_error(name: &str, source: object_store::Error) -> StoreError {
    match source {
        object_store::Error::NotFound { .. } => StoreError::NotFound {
            name: name.to_string(),
        },
        source => StoreError::S3 {
            action: "read",
            name: name.to_string(),
            detail: summarize(&source),
        },
    }
}

/// One line out of an object_store error: the HTTP status and the S3 error
/// code and message when the server sent them, else the root cause.
pub fn summarize(error: &object_store::Error) -> String {
    fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
        let from = text.find(start)? + start.len();
        let to = text[from..].find(end)? + from;
        Some(&text[from..to])
    }
    let full = error.to_string();
    if let (Some(code), Some(message)) = (
        between(&full, "<Code>", "</Code>"),
        between(&full, "<Message>", "</Message>"),
    ) {
        let status = between(&full, "status code: ", ":").unwrap_or("error");
        return format!("HTTP {status}, {code}: {message}");
    }
    let mut root: &dyn std::error::Error = error;
    while let Some(source) = root.source() {
        root = source;
    }
    let root = root.to_string();
    let first = full.split(": ").next().unwrap_or(&full);
    let mut summary = if root == full || first == root {
        full.clone()
    } else {
        format!("{first}: {root}")
    };
    if summary.len() > 400 {
        let mut cut = 400;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
        summary.push('…');
    }
    summary
}

impl Upload {
    /// Appends a chunk. For S3, waits while parts are in flight, which keeps
    /// memory bounded to a few parts whatever the database size.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        match self {
            Upload::Local {
                file, temporary, ..
            } => file
                .write_all(&chunk)
                .await
                .map_err(|source| StoreError::Io {
                    action: "write",
                    path: temporary.clone(),
                    source,
                }),
            Upload::S3 { name, writer } => {
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|source| StoreError::S3 {
                        action: "upload a part of",
                        name: name.clone(),
                        detail: summarize(&source),
                    })?;
                writer.put(chunk);
                Ok(())
            }
        }
    }

    /// Makes the object visible under its final name, durably.
    pub async fn finish(self) -> Result<(), StoreError> {
        match self {
            Upload::Local {
                mut file,
                temporary,
                target,
            } => {
                let outcome = async {
                    file.flush().await.map_err(|source| StoreError::Io {
                        action: "write",
                        path: temporary.clone(),
                        source,
                    })?;
                    // fsync before the rename: otherwise a crash can leave the
                    // final name pointing at a file whose data never reached the disk.
                    file.sync_all().await.map_err(|source| StoreError::Io {
                        action: "fsync",
                        path: temporary.clone(),
                        source,
                    })?;
                    drop(file);
                    tokio::fs::rename(&temporary, &target)
                        .await
                        .map_err(|source| StoreError::Io {
                            action: "rename",
                            path: temporary.clone(),
                            source,
                        })?;
                    sync_directory(target.parent().expect("has a directory")).await
                }
                .await;
                if outcome.is_err() {
                    let _ = tokio::fs::remove_file(&temporary).await;
                }
                outcome
            }
            Upload::S3 { name, writer } => {
                writer
                    .finish()
                    .await
                    .map(|_| ())
                    .map_err(|source| StoreError::S3 {
                        action: "complete the upload of",
                        name,
                        detail: summarize(&source),
                    })
            }
        }
    }

    /// Gives up: removes the temporary file or aborts the multipart upload.
    pub async fn abort(self) {
        match self {
            Upload::Local {
                file, temporary, ..
            } => {
                drop(file);
                if let Err(error) = tokio::fs::remove_file(&temporary).await {
                    tracing::warn!(path = %temporary.display(), error = %error, "could not remove a temporary file; prune removes it later");
                }
            }
            Upload::S3 { name, writer } => {
                if let Err(error) = writer.abort().await {
                    tracing::warn!(object = %name, error = %error, "could not abort a multipart upload; a bucket lifecycle rule should remove it");
                }
            }
        }
    }
}

/// fsyncs a directory so a rename in it survives a crash.
async fn sync_directory(directory: &Path) -> Result<(), StoreError> {
    let directory = directory.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&directory)
            .and_then(|handle| handle.sync_all())
            .map_err(|source| StoreError::Io {
                action: "fsync the directory",
                path: directory.clone(),
                source,
            })
    })
    .await
    .expect("fsync thread does not panic")
}

fn read_secret_file(path: &Path, key: &str) -> Result<SecretString, StoreError> {
    std::fs::read_to_string(path)
        .map(|text| SecretString::from(text.trim().to_string()))
        .map_err(|error| {
            StoreError::Config(format!(
                "cannot read {key} file {}: {error}",
                path.display()
            ))
        })
}

fn build_s3(settings: &StoreSettings) -> Result<Store, StoreError> {
    let bucket = settings
        .bucket
        .clone()
        .ok_or_else(|| StoreError::Config("backup.store.bucket is not set".to_string()))?;
    // object_store builds its reqwest client without a crypto provider:
    // main installs the process's one (todo_common::http).
    // from_env: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
    // AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (IRSA), container and
    // instance credentials. The settings then override what they name.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .with_region(&settings.region)
        .with_virtual_hosted_style_request(!settings.path_style)
        .with_retry(RetryConfig {
            max_retries: settings.max_retries,
            retry_timeout: Duration::from_secs(settings.request_timeout_seconds.max(1) * 2),
            ..RetryConfig::default()
        })
        .with_client_options(
            ClientOptions::new()
                .with_timeout(Duration::from_secs(settings.request_timeout_seconds.max(1)))
                .with_connect_timeout(Duration::from_secs(10)),
        );
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let (Some(key_file), Some(secret_file)) = (
        &settings.access_key_id_file,
        &settings.secret_access_key_file,
    ) {
        let key = read_secret_file(key_file, "backup.store.access_key_id_file")?;
        let secret = read_secret_file(secret_file, "backup.store.secret_access_key_file")?;
        builder = builder
            .with_access_key_id(key.expose_secret())
            .with_secret_access_key(secret.expose_secret());
    }
    let client = builder
        .build()
        // object_store's configuration errors name keys, not secret values.
        .map_err(|error| StoreError::Config(error.to_string()))?;
    let prefix = settings.prefix.trim_matches('/').to_string();
    Ok(Store::S3 {
        client: Arc::new(client),
        description: format!("s3://{bucket}/{prefix}"),
        prefix,
        part_size: settings.part_size_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_error_is_summarized_to_its_status_code_and_message() {
        let error = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other(
                "Error performing POST http://x/b?uploads - Server returned non-2xx status code: 404 Not Found: \
                 <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>",
            )),
        };
        assert_eq!(
            summarize(&error),
            "HTTP 404 Not Found, NoSuchBucket: The specified bucket does not exist"
        );
    }

    #[test]
    fn a_local_upload_is_invisible_until_finished_and_gone_when_aborted() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let directory = tempfile::tempdir().expect("tempdir");
            let store = Store::Local(directory.path().to_path_buf());
            let mut upload = store
                .begin_upload("snapshots/a.dump.zst")
                .await
                .expect("begins");
            upload
                .write(Bytes::from_static(b"data"))
                .await
                .expect("writes");
            let names =
                |objects: Vec<ObjectInfo>| objects.into_iter().map(|o| o.name).collect::<Vec<_>>();
            let listed = names(store.list("snapshots").await.expect("lists"));
            assert_eq!(listed.len(), 1);
            assert!(listed[0].starts_with("snapshots/.tmp-"), "{listed:?}");
            upload.finish().await.expect("finishes");
            assert_eq!(
                names(store.list("snapshots").await.expect("lists")),
                vec!["snapshots/a.dump.zst"]
            );
            assert_eq!(
                store.get("snapshots/a.dump.zst").await.expect("reads"),
                Bytes::from_static(b"data")
            );

            let mut aborted = store
                .begin_upload("snapshots/b.dump.zst")
                .await
                .expect("begins");
            aborted
                .write(Bytes::from_static(b"partial"))
                .await
                .expect("writes");
            aborted.abort().await;
            assert_eq!(
                names(store.list("snapshots").await.expect("lists")),
                vec!["snapshots/a.dump.zst"]
            );
        });
    }
}
