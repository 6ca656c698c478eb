//! The backup commands on a local store: run, list, verify, restore, prune,
//! the restore drill and the concurrency lock.

use diesel::RunQueryDsl;
use diesel::sql_types::BigInt;

use crate::helpers::{Sidecar, TestDb, admin_query};
use todo_sidecar::backup::postgres::BACKUP_LOCK_KEY;

#[test]
fn a_restored_snapshot_is_identical_to_the_database_at_the_moment_of_the_backup() {
    // Arrange: the real todo-app schema, with data.
    let db = TestDb::create();
    let applied = todo_app::db::migrations::run_pending_migrations(
        &mut db.connect(),
        std::time::Duration::from_secs(60),
    )
    .expect("migrates");
    assert!(!applied.is_empty());
    db.seed_small();
    db.execute(
        "INSERT INTO api_keys (id, owner, secret_hash, created_at)
           SELECT gen_random_uuid(), 'owner' || i, sha256(i::text::bytea), now() FROM generate_series(1, 3) i;
         INSERT INTO todos (id, owner, title, description, completed, created_at, updated_at)
           SELECT gen_random_uuid(), 'owner' || (i % 3 + 1), 'todo ' || i, CASE WHEN i % 2 = 0 THEN 'd' END,
                  i % 5 = 0, now() - i * interval '1 minute', now()
           FROM generate_series(1, 300) i;",
    );
    let at_snapshot = db.table_hashes();
    let sidecar = Sidecar::local(&db);
    sidecar.run(&["backup", "run"]).assert_code(0);

    // Act: change and delete rows, then restore into a new database.
    db.execute(
        "UPDATE todos SET title = 'changed' WHERE completed;
         DELETE FROM items WHERE id % 2 = 0;
         TRUNCATE notes;",
    );
    assert_ne!(db.table_hashes(), at_snapshot);
    let target = TestDb::create();
    let outcome = sidecar.run(&["backup", "restore", "--latest", "--target-url", &target.url]);

    // Assert
    outcome.assert_code(0).assert_message("row counts match");
    assert_eq!(target.table_hashes(), at_snapshot);
}

#[test]
fn restore_refuses_a_non_empty_target_unless_forced() {
    let db = TestDb::create();
    db.seed_small();
    let sidecar = Sidecar::local(&db);
    sidecar.run(&["backup", "run"]).assert_code(0);
    let expected = db.table_hashes();
    let target = TestDb::create();
    target.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int); INSERT INTO items VALUES (1, 'other', 0);");

    let refused = sidecar.run(&["backup", "restore", "--latest", "--target-url", &target.url]);
    refused.assert_code(6).assert_message("is not empty");
    assert_eq!(
        target.query("SELECT name AS value FROM items"),
        "other",
        "the target was touched"
    );

    let forced = sidecar.run(&[
        "backup",
        "restore",
        "--latest",
        "--target-url",
        &target.url,
        "--force",
    ]);
    forced.assert_code(0);
    assert_eq!(target.table_hashes(), expected);
}

#[test]
fn run_list_verify_and_prune_keep_the_newest_snapshots() {
    // Arrange
    let db = TestDb::create();
    db.seed_small();
    let mut sidecar = Sidecar::local(&db);
    sidecar
        .set("SIDECAR__BACKUP__RETENTION__KEEP_LAST", "2")
        .set("SIDECAR__BACKUP__RETENTION__DAILY", "0")
        .set("SIDECAR__BACKUP__RETENTION__WEEKLY", "0");

    // Act: three backups; retention runs after each.
    for _ in 0..3 {
        sidecar
            .run(&["backup", "run"])
            .assert_code(0)
            .assert_message("published");
    }

    // Assert
    let snapshots = sidecar.list();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let finished = |snapshot: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(snapshot["finished_at"].as_str().expect("finished_at"))
            .expect("RFC 3339")
    };
    assert!(
        finished(&snapshots[0]) > finished(&snapshots[1]),
        "newest first"
    );
    let newest = &snapshots[0];
    assert_eq!(newest["database"], db.name.as_str());
    assert_eq!(newest["tables"]["public.items"], 500);
    assert_eq!(newest["tables"]["public.notes"], 200);
    assert_eq!(newest["sha256"].as_str().map(str::len), Some(64));
    assert!(newest["raw_bytes"].as_u64() > newest["compressed_bytes"].as_u64());
    assert!(
        newest["pg_dump_version"]
            .as_str()
            .is_some_and(|version| !version.is_empty())
    );
    assert_eq!(
        sidecar.snapshot_files().len(),
        4,
        "{:?}",
        sidecar.snapshot_files()
    );
    let table = sidecar.run(&["backup", "list"]);
    table.assert_code(0);
    assert!(table.stdout.contains(newest["id"].as_str().expect("id")));
    let id = snapshots[1]["id"].as_str().expect("id");
    sidecar
        .run(&["backup", "verify", id])
        .assert_code(0)
        .assert_message("is intact");
    sidecar
        .run(&["backup", "verify", "--latest"])
        .assert_code(0);
    sidecar
        .run(&["backup", "verify", "20200101T000000Z-000000"])
        .assert_code(3)
        .assert_message("no snapshot");

    // With keep_last 1 an explicit prune deletes the older one, never the newest.
    sidecar.set("SIDECAR__BACKUP__RETENTION__KEEP_LAST", "1");
    sidecar
        .run(&["backup", "prune"])
        .assert_code(0)
        .assert_message("deleted 1");
    let remaining = sidecar.list();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0]["id"], newest["id"]);
}

#[test]
fn the_restore_drill_restores_into_a_scratch_database_and_records_its_success() {
    let db = TestDb::create();
    db.seed_small();
    let sidecar = Sidecar::local(&db);
    sidecar.run(&["backup", "run"]).assert_code(0);

    let outcome = sidecar.run(&["backup", "verify", "--latest", "--restore-drill"]);

    outcome
        .assert_code(0)
        .assert_message("restore drill of snapshot");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sidecar.store_dir.join("drills/last-success.json")).expect("recorded"),
    )
    .expect("JSON");
    assert_eq!(record["snapshot"], sidecar.list()[0]["id"]);
    // The scratch database is gone.
    let leftovers = admin_query(
        "SELECT count(*)::text AS value FROM pg_database WHERE datname LIKE 'todo_restore_drill_%'",
    );
    assert_eq!(leftovers, "0");
    // And the metric reads it from the store.
    let metrics = todo_sidecar::metrics::Metrics::new();
    let store = todo_sidecar::backup::store::Store::from_settings(&sidecar.settings().backup.store)
        .expect("store");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(todo_sidecar::backup::refresh_metrics(
            &store,
            &metrics.backup,
        ))
        .expect("reads the store");
    assert!(
        metrics
            .backup
            .restore_drill_last_success_timestamp_seconds
            .get()
            > 0.0
    );
    assert_eq!(metrics.backup.snapshots.get(), 1);
}

#[test]
fn a_second_concurrent_backup_exits_with_the_lock_code_and_does_nothing() {
    // Arrange: another backup holds the advisory lock.
    let db = TestDb::create();
    db.seed_small();
    let sidecar = Sidecar::local(&db);
    let mut holder = db.connect();
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(BACKUP_LOCK_KEY)
        .execute(&mut holder)
        .expect("takes the lock");

    // Act
    let outcome = sidecar.run(&["backup", "run"]);

    // Assert
    outcome
        .assert_code(4)
        .assert_message("another backup is running");
    assert!(
        sidecar.snapshot_files().is_empty(),
        "{:?}",
        sidecar.snapshot_files()
    );
    drop(holder);
    sidecar.run(&["backup", "run"]).assert_code(0);
}

#[test]
fn a_listing_larger_than_a_pipe_holds_is_read_whole() {
    // Arrange: 1500 complete snapshots (manifests only, as `list` reads),
    // about 400 KiB of JSON, far more than the 64 KiB a pipe buffers.
    let db = TestDb::create();
    let sidecar = Sidecar::local(&db);
    let directory = sidecar.store_dir.join("snapshots");
    std::fs::create_dir_all(&directory).expect("creates the store");
    let started = chrono::Utc::now() - chrono::Duration::days(1);
    for number in 0..1500 {
        let id = format!("20261126T120000Z-{number:06}");
        let manifest = todo_sidecar::backup::snapshot::Manifest {
            format_version: 1,
            id: id.clone(),
            database: "todo".to_string(),
            server_version: "15.14".to_string(),
            pg_dump_version: "15.14".to_string(),
            started_at: started,
            finished_at: started + chrono::Duration::seconds(number),
            compressed_bytes: 1,
            raw_bytes: 1,
            sha256: "0".repeat(64),
            format: "pg_dump custom archive, zstd".to_string(),
            tables: std::collections::BTreeMap::new(),
        };
        std::fs::write(
            directory.join(format!("{id}.manifest.json")),
            serde_json::to_vec(&manifest).expect("encodes"),
        )
        .expect("writes the manifest");
    }

    // Act
    let outcome = sidecar.run(&["backup", "list", "--json"]);

    // Assert
    outcome.assert_code(0);
    assert!(outcome.stdout.len() > 64 * 1024);
    assert_eq!(outcome.stdout.lines().count(), 1500);
}
