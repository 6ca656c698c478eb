//! Embedded migrations: idempotent, and safe when replicas start together.

use std::process::Command;
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use diesel::sql_types::BigInt;
use todo_app::db::migrations::{MIGRATION_LOCK_KEY, run_pending_migrations};

use crate::helpers::{admin_database_url, configuration_dir, create_database, drop_database};

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

fn count(connection: &mut diesel::PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(connection)
        .unwrap()
        .count
}

/// How many migrations the binary carries.
fn embedded_migrations() -> i64 {
    use diesel::migration::MigrationSource;
    MigrationSource::<diesel::pg::Pg>::migrations(&todo_app::db::migrations::MIGRATIONS)
        .expect("the embedded migrations load")
        .len() as i64
}

#[test]
fn running_migrations_twice_applies_them_once() {
    let (name, url) = create_database(&admin_database_url());
    let mut connection = <diesel::PgConnection as diesel::Connection>::establish(&url).unwrap();

    let first = run_pending_migrations(&mut connection, Duration::from_secs(5)).unwrap();
    let second = run_pending_migrations(&mut connection, Duration::from_secs(5)).unwrap();

    assert_eq!(first.len() as i64, embedded_migrations());
    assert!(second.is_empty(), "nothing left to apply");
    assert_eq!(
        count(
            &mut connection,
            "SELECT count(*) AS count FROM __diesel_schema_migrations"
        ),
        embedded_migrations()
    );
    drop(connection);
    drop_database(&admin_database_url(), &name);
}

#[test]
fn two_processes_migrating_one_empty_database_at_once_both_succeed() {
    let (name, url) = create_database(&admin_database_url());
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_todo-app"))
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("APP_CONFIG_DIR", configuration_dir())
            .env_remove("APP_ENVIRONMENT")
            .spawn()
            .expect("todo-app starts")
    };

    let mut first = spawn();
    let mut second = spawn();
    let first = first.wait().unwrap();
    let second = second.wait().unwrap();

    assert!(first.success() && second.success(), "{first:?} {second:?}");
    let mut connection = <diesel::PgConnection as diesel::Connection>::establish(&url).unwrap();
    assert_eq!(
        count(
            &mut connection,
            "SELECT count(*) AS count FROM __diesel_schema_migrations"
        ),
        embedded_migrations()
    );
    assert_eq!(
        count(
            &mut connection,
            "SELECT count(*) AS count FROM information_schema.columns \
             WHERE table_name = 'todos' AND column_name = 'owner'"
        ),
        1
    );
    drop(connection);
    drop_database(&admin_database_url(), &name);
}

#[test]
fn a_migration_lock_held_too_long_fails_migrate_clearly_instead_of_waiting_for_ever() {
    let (name, url) = create_database(&admin_database_url());
    let mut holder = <diesel::PgConnection as diesel::Connection>::establish(&url).unwrap();
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut holder)
        .unwrap();

    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("APP_CONFIG_DIR", configuration_dir())
        .env("APP__DATABASE__MIGRATION_LOCK_WAIT_SECONDS", "1")
        .env_remove("APP_ENVIRONMENT")
        .output()
        .expect("todo-app runs");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up in {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("database.migration_lock_wait_seconds"),
        "{stderr}"
    );
    drop(holder);
    // Once the lock is free, the same command migrates.
    let retried = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("APP_CONFIG_DIR", configuration_dir())
        .env_remove("APP_ENVIRONMENT")
        .status()
        .unwrap();
    assert!(retried.success());
    drop_database(&admin_database_url(), &name);
}

#[test]
fn the_owner_scoped_indexes_exist() {
    let (name, url) = create_database(&admin_database_url());
    let mut connection = <diesel::PgConnection as diesel::Connection>::establish(&url).unwrap();
    run_pending_migrations(&mut connection, Duration::from_secs(5)).unwrap();

    let indexes = count(
        &mut connection,
        "SELECT count(*) AS count FROM pg_indexes WHERE tablename = 'todos' AND indexname IN \
         ('todos_created_at_idx', 'todos_completed_idx', 'todos_owner_created_at_idx', \
          'todos_owner_completed_created_at_idx')",
    );

    assert_eq!(indexes, 4);
    // Only the primary key has `id` as a key column, so a lookup by id can
    // never be planned as a range scan of a listing index.
    let indexes_on_id = count(
        &mut connection,
        "SELECT count(*) AS count FROM pg_index i JOIN pg_attribute a \
         ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey[0:i.indnkeyatts - 1]) \
         WHERE i.indrelid = 'todos'::regclass AND a.attname = 'id'",
    );
    assert_eq!(indexes_on_id, 1);
    drop(connection);
    drop_database(&admin_database_url(), &name);
}
