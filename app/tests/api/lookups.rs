//! A lookup by id stays one primary-key probe however the owner's todos
//! grow under a running server: the plan a connection cached while the table
//! was small must not turn into a range scan (or a full scan) as it grows.
//!
//! The cost of a lookup is measured in buffer pages PostgreSQL touched for
//! it (`pg_statio_user_tables`), not in wall-clock time: the count is the
//! same on a busy machine and an idle one, and a plan that walks the owner's
//! range reads hundreds of pages where the primary key reads four.

use std::time::Duration;

use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use todo_app::startup::Application;

use crate::helpers::{TestApp, eventually, http_client, spawn_app_with, test_settings};

/// Todos the owner holds after the growth.
const GROWN_TO: i64 = 100_000;
/// Lookups measured on each server.
const LOOKUPS: usize = 20;

#[derive(QueryableByName)]
struct TodosIo {
    /// Scans of `todos` (sequential and index) since the statistics were reset.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    scans: i64,
    /// Heap and index pages of `todos` read or found in shared buffers.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pages: i64,
}

fn todos_io(connection: &mut PgConnection) -> TodosIo {
    diesel::sql_query(
        "SELECT (COALESCE(t.seq_scan, 0) + COALESCE(t.idx_scan, 0))::bigint AS scans, \
                (COALESCE(io.heap_blks_read, 0) + COALESCE(io.heap_blks_hit, 0) \
                 + COALESCE(io.idx_blks_read, 0) + COALESCE(io.idx_blks_hit, 0))::bigint AS pages \
         FROM pg_stat_user_tables t JOIN pg_statio_user_tables io USING (relid) \
         WHERE t.relname = 'todos'",
    )
    .get_result(connection)
    .expect("the statistics of todos are readable")
}

/// Pages of `todos` touched per `GET /api/todos/{id}` of `ids` on the server at `address`.
async fn pages_per_lookup(
    observer: &mut PgConnection,
    address: &str,
    token: &str,
    ids: &[String],
) -> f64 {
    let client = http_client();
    let get = |id: &str| {
        client
            .get(format!("{address}/api/todos/{id}"))
            .bearer_auth(token)
            .send()
    };
    // Warm up first: a new connection's first executions are planned
    // (reading index metapages), and the first read of a row after the bulk
    // insert sets its hint bits; neither is what a lookup costs from then on.
    for id in ids {
        assert_eq!(get(id).await.unwrap().status(), 200);
    }
    let before = todos_io(observer);
    for id in ids {
        assert_eq!(get(id).await.unwrap().status(), 200);
    }
    // A backend publishes its statistics at the end of a transaction at most
    // once a second: one more lookup a second later flushes the others.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&ids[0]).await.unwrap().status(), 200);
    let lookups = ids.len() as i64 + 1;
    let mut after = todos_io(observer);
    let published = eventually(Duration::from_secs(15), || {
        after = todos_io(observer);
        let scans = after.scans - before.scans;
        async move { scans >= lookups }
    })
    .await;
    assert!(
        published,
        "the server's lookups reached pg_stat_user_tables"
    );
    (after.pages - before.pages) as f64 / lookups as f64
}

/// Starts a second server on `app`'s database (fresh connections, no cached plans).
async fn start_fresh_server(app: &TestApp) -> String {
    let mut settings = test_settings(&app.database_url);
    settings.server.workers = 1;
    settings.database.pipeline_depth = 1;
    let application = Application::build(settings)
        .await
        .expect("the second server builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    actix_web::rt::spawn(application.run_until_stopped());
    address
}

/// Serves lookups while the owner has one todo (so the server's only
/// connection caches its plans then), grows the owner to [`GROWN_TO`] todos
/// with autovacuum off (autoanalyze lagging behind the growth), and compares
/// the pages per lookup with a server started after the growth.
async fn lookups_after_growth_cost_what_they_cost_a_fresh_server(analyze_while_small: bool) {
    let app = spawn_app_with(|settings| {
        settings.server.workers = 1;
        settings.database.pipeline_depth = 1;
        settings.auth.key_cache_ttl_seconds = 600;
    })
    .await;
    let mut observer = app.connection();
    diesel::sql_query("ALTER TABLE todos SET (autovacuum_enabled = false)")
        .execute(&mut observer)
        .unwrap();
    let token = app.create_key("alice");
    let first = app.create_todo(&token, "the first").await;
    let first = first["id"].as_str().unwrap().to_string();
    if analyze_while_small {
        diesel::sql_query("ANALYZE todos")
            .execute(&mut observer)
            .unwrap();
    }
    // PostgreSQL switches a prepared statement to its cached generic plan
    // after five executions.
    for _ in 0..10 {
        assert_eq!(app.get_todo(&token, &first).await.status(), 200);
    }

    diesel::sql_query(format!(
        "INSERT INTO todos (id, owner, title, created_at) \
         SELECT gen_random_uuid(), 'alice', 'grown ' || n, now() - n * interval '1 ms' \
         FROM generate_series(1, {GROWN_TO}) AS n"
    ))
    .execute(&mut observer)
    .unwrap();
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let ids: Vec<String> = diesel::sql_query(format!(
        "SELECT id::text AS id FROM todos ORDER BY random() LIMIT {LOOKUPS}"
    ))
    .load::<Id>(&mut observer)
    .unwrap()
    .into_iter()
    .map(|row| row.id)
    .collect();
    // The observer's own reads of todos must not be counted as the server's.
    diesel::sql_query("SELECT pg_stat_force_next_flush()")
        .execute(&mut observer)
        .unwrap();

    let grown = pages_per_lookup(&mut observer, &app.address, &token, &ids).await;
    let fresh_address = start_fresh_server(&app).await;
    let fresh = pages_per_lookup(&mut observer, &fresh_address, &token, &ids).await;

    assert!(
        fresh < 10.0,
        "a fresh server probes the primary key: {fresh} pages per lookup"
    );
    // The cliff walks the owner's whole range of the composite index:
    // hundreds of pages per lookup at 100,000 rows. A pass at 1.1x failed
    // on a loaded machine at 9.9 pages against 8.0 (hint bits and buffer
    // noise, not a plan): 1.5x still tells the two apart by far.
    assert!(
        grown <= fresh * 1.5,
        "after the growth a lookup touched {grown} pages, a fresh server's {fresh}"
    );
}

#[actix_web::test]
async fn a_lookup_by_id_costs_the_same_after_growth_from_a_table_without_statistics() {
    lookups_after_growth_cost_what_they_cost_a_fresh_server(false).await;
}

#[actix_web::test]
async fn a_lookup_by_id_costs_the_same_after_growth_from_a_table_analyzed_while_small() {
    lookups_after_growth_cost_what_they_cost_a_fresh_server(true).await;
}
