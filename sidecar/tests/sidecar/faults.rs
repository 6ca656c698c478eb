//! Bad input and faults: each gives a clear error, a non-zero exit, a counted
//! failure (checked in process through the same `run_backup` that `run`
//! schedules), no published snapshot, and earlier snapshots intact.

use std::process::Stdio;
use std::time::Duration;

use diesel::connection::SimpleConnection;

use crate::helpers::{
    ChildGuard, PG_DUMP_WITH_THE_REAL_VERSION, PasswordCluster, Sidecar, TestDb, Tmpfs, free_port,
    wait_for,
};
use todo_sidecar::backup::store::Store;
use todo_sidecar::backup::{BackupError, run_backup};
use todo_sidecar::metrics::Metrics;

/// Runs one backup in process; returns the error and the failure counter.
fn failing_backup_in_process(sidecar: &Sidecar) -> (BackupError, u64) {
    let settings = sidecar.settings();
    let metrics = Metrics::new();
    let store = Store::from_settings(&settings.backup.store).expect("store");
    let outcome = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run_backup(
            &settings,
            &store,
            &metrics.backup,
            std::future::pending(),
        ));
    let error = outcome.expect_err("the backup fails");
    (error, metrics.backup.failures_total.get())
}

/// The earlier snapshot is still listed and intact.
fn assert_intact(sidecar: &Sidecar, expected: &serde_json::Value) {
    let listed = sidecar.list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(&listed[0], expected);
    sidecar
        .run(&["backup", "verify", expected["id"].as_str().expect("id")])
        .assert_code(0);
}

#[test]
fn an_unreachable_database_fails_clearly_and_publishes_nothing() {
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    sidecar.set(
        "DATABASE_URL",
        &format!("postgres://postgres@127.0.0.1:{}/todo", free_port()),
    );

    let outcome = sidecar.run(&["backup", "run"]);

    outcome
        .assert_code(1)
        .assert_message("Failed to connect to the database")
        .assert_message("Connection refused");
    assert!(sidecar.snapshot_files().is_empty());
    let (error, failures) = failing_backup_in_process(&sidecar);
    assert!(
        format!("{error:#}").contains("Failed to connect"),
        "{error:#}"
    );
    assert_eq!(failures, 1);
}

#[test]
fn a_wrong_password_fails_clearly_without_showing_it_and_the_right_one_works() {
    // Arrange: a cluster of its own, since the shared one trusts everyone.
    let cluster = PasswordCluster::start("the-right-secret");
    let db = TestDb::create();
    let mut sidecar = Sidecar::local(&db);
    let wrong = format!(
        "postgres://postgres:not-the-secret-7f3a@127.0.0.1:{}/postgres",
        cluster.port
    );
    sidecar.set("DATABASE_URL", &wrong);

    // Act
    let outcome = sidecar.run(&["backup", "run"]);

    // Assert
    outcome
        .assert_code(1)
        .assert_message("password authentication failed");
    assert!(
        !outcome.stderr.contains("not-the-secret-7f3a"),
        "{}",
        outcome.stderr
    );
    assert!(sidecar.snapshot_files().is_empty());
    let (_, failures) = failing_backup_in_process(&sidecar);
    assert_eq!(failures, 1);
    // The right password reaches pg_dump too (through PGPASSWORD).
    sidecar.set(
        "DATABASE_URL",
        &format!(
            "postgres://postgres:the-right-secret@127.0.0.1:{}/postgres",
            cluster.port
        ),
    );
    sidecar.run(&["backup", "run"]).assert_code(0);
}

#[test]
fn a_missing_pg_dump_says_what_to_install() {
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::local(&db);
    let empty = tempfile::tempdir().expect("tempdir");

    // Not on PATH.
    sidecar.set("PATH", empty.path().to_str().expect("UTF-8"));
    let outcome = sidecar.run(&["backup", "run"]);
    outcome
        .assert_code(7)
        .assert_message("pg_dump was not found on PATH")
        .assert_message("install postgresql-client-");

    // Not where the configuration says.
    sidecar.vars.remove("PATH");
    sidecar.set("SIDECAR__BACKUP__PG_DUMP_PATH", "/nonexistent/bin/pg_dump");
    let outcome = sidecar.run(&["backup", "run"]);
    outcome
        .assert_code(7)
        .assert_message("pg_dump was not found at /nonexistent/bin/pg_dump")
        .assert_message("install postgresql-client-");
    assert!(sidecar.snapshot_files().is_empty());
    let (error, failures) = failing_backup_in_process(&sidecar);
    assert_eq!(todo_sidecar::cli::exit_code_of(&error), 7);
    assert_eq!(failures, 1);
}

#[test]
fn a_pg_dump_older_than_the_server_is_refused_with_what_to_install() {
    // Arrange: a pg_dump that reports an old major version (Debian 12 ships
    // only the current client, so the old one is a stand-in script).
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::local(&db);
    sidecar.use_pg_dump_script("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n");

    let outcome = sidecar.run(&["backup", "run"]);

    outcome
        .assert_code(7)
        .assert_message("is version 9.6.24, older than the server")
        .assert_message("install postgresql-client-");
    assert!(sidecar.snapshot_files().is_empty());
}

#[test]
fn a_store_that_is_not_writable_fails_and_keeps_the_earlier_snapshot() {
    // Arrange: a store on a tmpfs that turns read-only after one backup.
    let db = TestDb::create();
    db.seed_small();
    let sidecar = Sidecar::local(&db);
    let mount = Tmpfs::mount(&sidecar.store_dir, "16m");
    sidecar.run(&["backup", "run"]).assert_code(0);
    let earlier = sidecar.list().remove(0);
    mount.remount("ro");

    // Act
    let outcome = sidecar.run(&["backup", "run"]);

    // Assert
    outcome
        .assert_code(1)
        .assert_message("Read-only file system");
    assert_intact(&sidecar, &earlier);
    let (_, failures) = failing_backup_in_process(&sidecar);
    assert_eq!(failures, 1);
}

#[test]
fn a_full_disk_fails_the_backup_removes_its_partial_file_and_keeps_the_earlier_snapshot() {
    // Arrange: a 1 MiB store holding one small snapshot; then more data
    // than fits, even compressed.
    let db = TestDb::create();
    db.seed_small();
    let sidecar = Sidecar::local(&db);
    let _mount = Tmpfs::mount(&sidecar.store_dir, "1m");
    sidecar.run(&["backup", "run"]).assert_code(0);
    let earlier = sidecar.list().remove(0);
    db.add_random_rows(60_000);

    // Act
    let outcome = sidecar.run(&["backup", "run"]);

    // Assert
    outcome
        .assert_code(1)
        .assert_message("No space left on device");
    assert_intact(&sidecar, &earlier);
    assert_eq!(
        sidecar.snapshot_files().len(),
        2,
        "no partial file left: {:?}",
        sidecar.snapshot_files()
    );
    let (_, failures) = failing_backup_in_process(&sidecar);
    assert_eq!(failures, 1);
}

#[test]
fn a_table_lock_held_past_backup_lock_wait_seconds_fails_the_backup_instead_of_hanging() {
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::local(&db);
    sidecar.run(&["backup", "run"]).assert_code(0);
    let earlier = sidecar.list().remove(0);
    let mut holder = db.lock_table("items");
    sidecar.set("SIDECAR__BACKUP__LOCK_WAIT_SECONDS", "1");

    let started = std::time::Instant::now();
    sidecar
        .run(&["backup", "run"])
        .assert_code(1)
        .assert_message("lock timeout");

    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up in {:?}",
        started.elapsed()
    );
    holder.batch_execute("ROLLBACK").expect("releases the lock");
    assert_intact(&sidecar, &earlier);
    assert_eq!(sidecar.list().len(), 1, "nothing was published");
}

#[test]
fn a_backup_killed_midway_publishes_nothing_and_prune_cleans_up_after_the_grace_period() {
    // Arrange: one snapshot; then a table lock makes the next pg_dump wait,
    // so the backup is surely in progress when it is killed.
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::local(&db);
    sidecar.run(&["backup", "run"]).assert_code(0);
    let earlier = sidecar.list().remove(0);
    let mut holder = db.lock_table("items");
    let child = sidecar
        .command(&["backup", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts a backup");
    let mut backup = ChildGuard(child);
    wait_for(
        "the backup to start writing and wait for the table lock",
        Duration::from_secs(60),
        || {
            let waiting = db.query(&format!(
            "SELECT count(*)::text AS value FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
            db.name
        ));
            let writing = sidecar
                .snapshot_files()
                .iter()
                .any(|name| name.starts_with(".tmp-"));
            (waiting != "0" && writing).then_some(())
        },
    );

    // Act
    backup.0.kill().expect("SIGKILL");
    backup.0.wait().expect("reaped");
    holder.batch_execute("ROLLBACK").expect("releases the lock");

    // Assert
    assert_intact(&sidecar, &earlier);
    // Within the grace period prune leaves the partial file (it could belong
    // to a running backup); after it, prune removes it.
    sidecar.run(&["backup", "prune"]).assert_code(0);
    assert_eq!(sidecar.snapshot_files().len(), 3);
    sidecar.set("SIDECAR__BACKUP__RETENTION__INCOMPLETE_GRACE_SECONDS", "0");
    sidecar
        .run(&["backup", "prune"])
        .assert_code(0)
        .assert_message("removed 1 incomplete");
    assert_eq!(sidecar.snapshot_files().len(), 2);
    // The killed backup's lock dies with its session, once the server
    // notices the client is gone (after the table lock is released).
    wait_for(
        "the killed backup's session to end",
        Duration::from_secs(60),
        || {
            let sessions = db.query(&format!(
            "SELECT count(*)::text AS value FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'todo-sidecar'",
            db.name
        ));
            (sessions == "0").then_some(())
        },
    );
    sidecar.run(&["backup", "run"]).assert_code(0);
}

#[test]
fn a_snapshot_with_one_flipped_byte_fails_verify_and_restore() {
    let db = TestDb::create();
    db.seed_small();
    let sidecar = Sidecar::local(&db);
    sidecar.run(&["backup", "run"]).assert_code(0);
    let id = sidecar.list()[0]["id"].as_str().expect("id").to_string();
    let data = sidecar.store_dir.join(format!("snapshots/{id}.dump.zst"));
    let mut bytes = std::fs::read(&data).expect("reads the object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&data, bytes).expect("writes it back");

    let verify = sidecar.run(&["backup", "verify", &id]);
    verify.assert_code(5).assert_message("is corrupted");

    let target = TestDb::create();
    let restore = sidecar.run(&["backup", "restore", &id, "--target-url", &target.url]);
    restore.assert_code(5).assert_message("is corrupted");
    assert!(target.table_hashes().is_empty(), "nothing was restored");
}

#[test]
fn a_manifest_that_does_not_parse_is_reported_and_never_restored() {
    let db = TestDb::create();
    db.seed_small();
    let sidecar = Sidecar::local(&db);
    sidecar.run(&["backup", "run"]).assert_code(0);
    let good = sidecar.list().remove(0);
    sidecar.run(&["backup", "run"]).assert_code(0);
    let bad = sidecar.list()[0]["id"].as_str().expect("id").to_string();
    assert_ne!(bad, good["id"].as_str().expect("id"));
    std::fs::write(
        sidecar
            .store_dir
            .join(format!("snapshots/{bad}.manifest.json")),
        "{\"id\": ",
    )
    .expect("breaks it");

    let list = sidecar.run(&["backup", "list", "--json"]);
    list.assert_code(0).assert_message("does not parse");
    assert_eq!(list.stdout.lines().count(), 1);
    sidecar
        .run(&["backup", "verify", &bad])
        .assert_code(5)
        .assert_message("manifest does not parse");
    let target = TestDb::create();
    sidecar
        .run(&["backup", "restore", &bad, "--target-url", &target.url])
        .assert_code(5);
    assert!(target.table_hashes().is_empty());
    // --latest means the newest complete one; prune leaves the damaged one for a human.
    sidecar
        .run(&["backup", "verify", "--latest"])
        .assert_code(0);
    sidecar
        .run(&["backup", "prune"])
        .assert_code(0)
        .assert_message("1 damaged left in place");
    assert_eq!(sidecar.snapshot_files().len(), 4);
}

#[test]
fn a_pg_dump_that_exits_non_zero_fails_the_backup_with_its_message_and_leaves_nothing() {
    // Arrange: a pg_dump that reports the real version, writes a little and fails.
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::local(&db);
    sidecar.use_pg_dump_script(&format!(
        "{PG_DUMP_WITH_THE_REAL_VERSION}printf PGDMP\necho 'pg_dump: error: query failed: simulated failure' >&2\nexit 1\n"
    ));

    // Act
    let outcome = sidecar.run(&["backup", "run"]);

    // Assert
    outcome
        .assert_code(1)
        .assert_message("pg_dump failed")
        .assert_message("simulated failure");
    assert_eq!(sidecar.snapshot_files(), Vec::<String>::new());
}
