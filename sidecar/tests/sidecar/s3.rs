//! The S3 store against a real S3-compatible server (moto), with a proxy
//! injecting server errors mid-upload.

use std::sync::atomic::Ordering;

use crate::helpers::{FaultyProxy, Moto, Sidecar, TestDb};

/// Rows that compress to more than one 5 MiB part.
const MULTIPART_ROWS: u32 = 200_000;

#[test]
fn a_multipart_snapshot_in_s3_verifies_and_restores_identically() {
    // Arrange
    let moto = Moto::with_bucket("backups");
    let db = TestDb::create();
    db.seed_small();
    db.add_random_rows(MULTIPART_ROWS);
    let expected = db.table_hashes();
    let mut sidecar = Sidecar::s3(&db, &moto.endpoint(), "backups");
    sidecar.set("SIDECAR__BACKUP__STORE__PREFIX", "team/todo");

    // Act
    sidecar
        .run(&["backup", "run"])
        .assert_code(0)
        .assert_message("s3://backups/team/todo");

    // Assert
    let snapshots = sidecar.list();
    assert_eq!(snapshots.len(), 1);
    let id = snapshots[0]["id"].as_str().expect("id");
    assert!(
        snapshots[0]["compressed_bytes"].as_u64().expect("size") > 5 * 1024 * 1024,
        "more than one part"
    );
    let mut keys = moto.keys("backups");
    keys.sort();
    assert_eq!(
        keys,
        vec![
            format!("team/todo/snapshots/{id}.dump.zst"),
            format!("team/todo/snapshots/{id}.manifest.json"),
        ]
    );
    assert_eq!(moto.pending_uploads("backups"), 0);
    sidecar
        .run(&["backup", "verify", "--latest"])
        .assert_code(0);
    let target = TestDb::create();
    sidecar
        .run(&["backup", "restore", id, "--target-url", &target.url])
        .assert_code(0);
    assert_eq!(target.table_hashes(), expected);
}

#[test]
fn a_missing_bucket_fails_clearly() {
    let moto = Moto::start();
    let db = TestDb::create();
    db.seed_small();
    let sidecar = Sidecar::s3(&db, &moto.endpoint(), "no-such-bucket");

    let outcome = sidecar.run(&["backup", "run"]);

    outcome.assert_code(1).assert_message("NoSuchBucket");
    assert!(!outcome.stderr.contains("testing-secret"));
}

#[test]
fn a_server_error_mid_upload_aborts_the_upload_and_keeps_the_earlier_snapshot() {
    // Arrange: every part after the first answers 500.
    let moto = Moto::with_bucket("backups");
    let proxy = FaultyProxy::start(moto.port, 2);
    let db = TestDb::create();
    db.seed_small();
    let sidecar = Sidecar::s3(&db, &proxy.endpoint(), "backups");
    sidecar.run(&["backup", "run"]).assert_code(0);
    let earlier = sidecar.list().remove(0);
    db.add_random_rows(MULTIPART_ROWS);

    // Act
    let outcome = sidecar.run(&["backup", "run"]);

    // Assert
    outcome.assert_code(1).assert_message("500");
    assert!(
        proxy.injected.load(Ordering::SeqCst) >= 1,
        "the fault was injected"
    );
    let listed = sidecar.list();
    assert_eq!(listed, vec![earlier.clone()]);
    assert_eq!(
        moto.keys("backups").len(),
        2,
        "only the earlier snapshot's objects"
    );
    assert_eq!(
        moto.pending_uploads("backups"),
        0,
        "the multipart upload was aborted"
    );
    sidecar
        .run(&["backup", "verify", "--latest"])
        .assert_code(0);
}

#[test]
fn credentials_come_from_mounted_files_and_an_unreadable_file_is_named() {
    // Arrange: no AWS_* variables, the keys in files (as from a Secret).
    let moto = Moto::with_bucket("backups");
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::s3(&db, &moto.endpoint(), "backups");
    sidecar.vars.remove("AWS_ACCESS_KEY_ID");
    sidecar.vars.remove("AWS_SECRET_ACCESS_KEY");
    let secrets = tempfile::tempdir().expect("tempdir");
    let key_file = secrets.path().join("access-key-id");
    let secret_file = secrets.path().join("secret-access-key");
    std::fs::write(&key_file, "file-key\n").expect("writes");
    std::fs::write(&secret_file, "file-secret-value\n").expect("writes");
    sidecar
        .set(
            "SIDECAR__BACKUP__STORE__ACCESS_KEY_ID_FILE",
            key_file.to_str().expect("UTF-8"),
        )
        .set(
            "SIDECAR__BACKUP__STORE__SECRET_ACCESS_KEY_FILE",
            secret_file.to_str().expect("UTF-8"),
        );

    // Act and Assert
    sidecar.run(&["backup", "run"]).assert_code(0);
    assert_eq!(sidecar.list().len(), 1);
    sidecar.set(
        "SIDECAR__BACKUP__STORE__SECRET_ACCESS_KEY_FILE",
        "/nonexistent/secret-access-key",
    );
    let outcome = sidecar.run(&["backup", "list"]);
    outcome
        .assert_code(1)
        .assert_message("backup.store.secret_access_key_file");
    assert!(!outcome.stderr.contains("file-secret-value"));
}

#[test]
fn a_snapshot_that_takes_longer_than_the_request_timeout_to_read_still_verifies() {
    // Arrange: a snapshot of about 20 MiB, read back through a 1.5 MiB/s
    // link with 5 s allowed per request. One GET (and object_store's one
    // resumed retry) would need more than twice that.
    let moto = Moto::with_bucket("backups");
    let db = TestDb::create();
    db.add_random_rows(600_000);
    let sidecar = Sidecar::s3(&db, &moto.endpoint(), "backups");
    sidecar.run(&["backup", "run"]).assert_code(0);
    let size = sidecar.list()[0]["compressed_bytes"]
        .as_u64()
        .expect("size");
    let rate = 3 * 512 * 1024;
    assert!(
        size as f64 / rate as f64 > 2.0 * 5.0 * 1.2,
        "one GET of {size} bytes takes far longer than the timeout"
    );
    let proxy = FaultyProxy::throttled(moto.port, rate);
    let mut slow = Sidecar::s3(&db, &proxy.endpoint(), "backups");
    slow.set("SIDECAR__BACKUP__STORE__REQUEST_TIMEOUT_SECONDS", "5");

    // Act
    let outcome = slow.run(&["backup", "verify", "--latest"]);

    // Assert: read in ranges of one part (5 MiB, 3.3 s each).
    outcome.assert_code(0).assert_message("is intact");
}

#[test]
fn a_failed_manifest_put_publishes_nothing_and_prune_removes_the_orphaned_data() {
    // Arrange: every manifest PUT answers 500.
    let moto = Moto::with_bucket("backups");
    let proxy = FaultyProxy::failing(moto.port, |request| {
        request.starts_with("PUT ") && request.contains(".manifest.json")
    });
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::s3(&db, &proxy.endpoint(), "backups");
    sidecar.set("SIDECAR__BACKUP__RETENTION__INCOMPLETE_GRACE_SECONDS", "0");

    // Act
    let outcome = sidecar.run(&["backup", "run"]);

    // Assert: nothing listed; the data object alone is incomplete, and prune
    // (through the proxy too: only manifest PUTs fail) removes it.
    outcome
        .assert_code(1)
        .assert_message("Failed to write the manifest of snapshot");
    assert!(proxy.injected.load(Ordering::SeqCst) >= 1);
    assert_eq!(sidecar.list(), Vec::<serde_json::Value>::new());
    let keys = moto.keys("backups");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with(".dump.zst"));
    sidecar
        .run(&["backup", "prune"])
        .assert_code(0)
        .assert_message("removed 1 incomplete objects");
    assert_eq!(moto.keys("backups"), Vec::<String>::new());
}

#[test]
fn retention_that_cannot_delete_keeps_the_new_snapshot_and_prune_says_why() {
    // Arrange: keep one snapshot; every delete (DeleteObject, or the
    // DeleteObjects POST object_store may use) answers 500.
    let moto = Moto::with_bucket("backups");
    let proxy = FaultyProxy::failing(moto.port, |request| {
        request.starts_with("DELETE ") || request.contains("?delete")
    });
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::s3(&db, &proxy.endpoint(), "backups");
    for (key, value) in [("KEEP_LAST", "1"), ("DAILY", "0"), ("WEEKLY", "0")] {
        sidecar.set(&format!("SIDECAR__BACKUP__RETENTION__{key}"), value);
    }
    sidecar.run(&["backup", "run"]).assert_code(0);

    // Act: the second backup publishes, then its retention fails.
    let second = sidecar.run(&["backup", "run"]);
    let prune = sidecar.run(&["backup", "prune"]);

    // Assert: a published snapshot is a successful backup; prune fails, naming the cause.
    second.assert_code(0).assert_message("published");
    assert!(
        second.stderr.contains("retention failed"),
        "{}",
        second.stderr
    );
    assert_eq!(sidecar.list().len(), 2, "nothing was deleted");
    prune.assert_code(1).assert_message("500");
}
