//! The database over TLS, as production runs it: a PostgreSQL cluster of its
//! own that refuses plaintext TCP connections, with a server certificate for
//! `localhost` signed by a test CA. The app works with sslmode `require`,
//! `verify-ca` and `verify-full` (against the name the certificate holds),
//! is refused with `verify-full` against a name it does not hold, and never
//! shows the password of its URL. The same through
//! [`todo_app::db::connect::AsyncConnector`] directly.

use std::path::PathBuf;
use std::time::Duration;

use diesel::sql_types::{BigInt, Bool};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};
use todo_app::db::api_keys;
use todo_app::db::connect::AsyncConnector;
use todo_app::domain::Owner;

use crate::helpers::{ServerProcess, ThrowawayCluster, create_database, spawn_app_on_server};

/// The password every URL here carries: trust authentication ignores it, so
/// it must never show in a message or a log line.
const PASSWORD: &str = "hunter2";

/// A cluster serving TLS with a certificate for DNS name `localhost` only,
/// and the file of the CA that signed it.
struct TlsCluster {
    cluster: ThrowawayCluster,
    ca_file: PathBuf,
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let cluster = ThrowawayCluster::start();
        let (ca_pem, issuer) = certificate_authority("todo test CA");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("a valid name");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("a signed certificate");
        cluster.enable_tls(&cert.pem(), &key.serialize_pem());
        let ca_file = cluster.data_dir().join("test-ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("the CA file is written");
        TlsCluster { cluster, ca_file }
    }

    /// The server URL (database `postgres`) through `host`, with `query`;
    /// `CA` in `query` stands for the CA file.
    fn url(&self, host: &str, query: &str) -> String {
        let query = query.replace("CA", self.ca_file.to_str().expect("a UTF-8 path"));
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{query}",
            self.cluster.port
        )
    }
}

/// A self-signed CA certificate named `name` (PEM) and the issuer that signs with it.
fn certificate_authority(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().expect("a key");
    let pem = params.self_signed(&key).expect("a CA certificate").pem();
    (pem, rcgen::Issuer::new(params, key))
}

#[derive(QueryableByName)]
struct TlsSessions {
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    plaintext: i64,
}

/// The app's sessions on the server: (all of them, those without TLS).
fn app_sessions(database_url: &str) -> (i64, i64) {
    let mut connection = PgConnection::establish(database_url).expect("the database is reachable");
    let sessions: TlsSessions = diesel::sql_query(
        "SELECT count(*) AS total, count(*) FILTER (WHERE NOT s.ssl) AS plaintext \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'todo-app' AND a.pid <> pg_backend_pid()",
    )
    .get_result(&mut connection)
    .expect("pg_stat_ssl is readable");
    (sessions.total, sessions.plaintext)
}

/// Runs the app on `server_url`, creates and reads back a todo through the
/// API, and checks that the app's sessions all use TLS.
async fn todo_round_trip(server_url: &str) {
    let app = spawn_app_on_server(server_url, false, |_| {}).await;
    let token = app.create_key("alice");

    let todo = app.create_todo(&token, "over TLS").await;
    let id = todo["id"].as_str().expect("an id");
    let read = app.get_todo(&token, id).await;

    assert_eq!(read.status(), 200);
    let body: serde_json::Value = read.json().await.expect("a JSON body");
    assert_eq!(body["title"], "over TLS");
    let (total, plaintext) = app_sessions(&app.database_url);
    assert!(total >= 1, "the app holds sessions");
    assert_eq!(plaintext, 0, "every session of the app uses TLS");
}

#[actix_web::test]
async fn the_app_works_with_sslmode_require() {
    let tls = TlsCluster::start();
    todo_round_trip(&tls.url("127.0.0.1", "sslmode=require")).await;
}

#[actix_web::test]
async fn the_app_works_with_sslmode_verify_full_against_the_certificates_name() {
    let tls = TlsCluster::start();
    todo_round_trip(&tls.url("localhost", "sslmode=verify-full&sslrootcert=CA")).await;
}

#[actix_web::test]
async fn the_app_works_with_sslmode_verify_ca_whatever_the_name() {
    let tls = TlsCluster::start();
    todo_round_trip(&tls.url("127.0.0.1", "sslmode=verify-ca&sslrootcert=CA")).await;
}

#[actix_web::test]
async fn with_sslmode_verify_full_against_another_name_requests_get_503_and_the_log_says_why_without_the_password()
 {
    let tls = TlsCluster::start();
    // The database is prepared through the name the certificate holds...
    let (_, good_url) =
        create_database(&tls.url("localhost", "sslmode=verify-full&sslrootcert=CA"));
    let mut connection = PgConnection::establish(&good_url).expect("the database is reachable");
    todo_app::db::migrations::run_pending_migrations(&mut connection, Duration::from_secs(60))
        .expect("migrations run");
    let key = todo_app::auth::generate_token();
    api_keys::insert(
        &mut connection,
        key.id,
        &Owner::parse("alice").expect("a valid owner"),
        &key.secret_hash,
    )
    .expect("the key is stored");
    // ...and the app is given its address, which the certificate does not name.
    let bad_url = good_url.replace("@localhost:", "@127.0.0.1:");
    assert_ne!(bad_url, good_url);

    let server = ServerProcess::start(&bad_url, &[("APP__DATABASE__MIGRATE_ON_START", "false")]);
    let client = crate::helpers::http_client();
    let list = client
        .get(format!("{}/api/todos", server.address))
        .bearer_auth(key.token.expose_secret())
        .send()
        .await
        .expect("request sent");
    let list_status = list.status();
    let list_body = list.text().await.expect("a body");
    let ready = client
        .get(format!("{}/health/ready", server.admin_address))
        .send()
        .await
        .expect("request sent");
    let ready_status = ready.status();
    let ready_body = ready.text().await.expect("a body");
    let (_, lines) = server.terminate();

    assert_eq!(list_status, 503, "{list_body}");
    assert_eq!(ready_status, 503, "{ready_body}");
    let output = lines.join("\n");
    for text in [&list_body, &ready_body, &output] {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains("certificate") && line.contains("127.0.0.1")),
        "a log line says the certificate does not name 127.0.0.1:\n{output}"
    );
}

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

/// Whether the session `connector` opens uses TLS.
async fn connects_with_tls(connector: &AsyncConnector) -> Result<bool, diesel::ConnectionError> {
    let mut connection = connector.connect().await?;
    let row: Ssl = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
        &mut connection,
    )
    .await
    .expect("pg_stat_ssl is readable");
    Ok(row.ssl)
}

fn connector(url: &str) -> AsyncConnector {
    AsyncConnector::new(
        &SecretString::from(url.to_string()),
        "-c statement_timeout=5000",
    )
    .unwrap_or_else(|error| panic!("{url}: {error}"))
}

fn refusal(error: diesel::ConnectionError) -> String {
    match error {
        diesel::ConnectionError::BadConnection(message) => message,
        other => panic!("expected BadConnection, got {other:?}"),
    }
}

#[actix_web::test]
async fn the_async_connector_uses_tls_as_each_sslmode_asks() {
    let tls = TlsCluster::start();

    for (host, query) in [
        ("127.0.0.1", "sslmode=prefer"),
        ("127.0.0.1", "sslmode=require"),
        ("127.0.0.1", "sslmode=verify-ca&sslrootcert=CA"),
        ("localhost", "sslmode=verify-full&sslrootcert=CA"),
        // tcp_user_timeout and keepalives_count, as the app's URL has them.
        (
            "localhost",
            "sslmode=verify-full&sslrootcert=CA&tcp_user_timeout=10000&keepalives_count=3",
        ),
    ] {
        let url = tls.url(host, query);
        assert!(
            connects_with_tls(&connector(&url))
                .await
                .unwrap_or_else(|error| panic!("{query}: {error}")),
            "{host} {query}: the session uses TLS"
        );
    }

    // The session options reach the server.
    let mut connection = connector(&tls.url("127.0.0.1", "sslmode=require"))
        .connect()
        .await
        .expect("connects");
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement_timeout: String,
    }
    let setting: Setting = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query("SHOW statement_timeout"),
        &mut connection,
    )
    .await
    .expect("SHOW answers");
    assert_eq!(setting.statement_timeout, "5s");
}

#[actix_web::test]
async fn the_async_connector_is_refused_what_libpq_would_refuse_and_says_why_without_the_password()
{
    let tls = TlsCluster::start();
    let (other_ca, _) = certificate_authority("another CA");
    let other_ca_file = tls.cluster.data_dir().join("other-ca.pem");
    std::fs::write(&other_ca_file, other_ca).expect("the CA file is written");

    let cases = [
        // The certificate names localhost, not 127.0.0.1.
        (
            tls.url("127.0.0.1", "sslmode=verify-full&sslrootcert=CA"),
            "127.0.0.1",
        ),
        // Signed by another CA: the chain is checked in verify-ca...
        (
            tls.url(
                "localhost",
                &format!("sslmode=verify-ca&sslrootcert={}", other_ca_file.display()),
            ),
            "certificate",
        ),
        // ...and in require as soon as a root certificate is given, as libpq.
        (
            tls.url(
                "localhost",
                &format!("sslmode=require&sslrootcert={}", other_ca_file.display()),
            ),
            "certificate",
        ),
        // The server refuses plaintext (pg_hba.conf: hostnossl … reject).
        (tls.url("127.0.0.1", "sslmode=disable"), "no encryption"),
    ];
    for (url, reason) in cases {
        let message = refusal(connects_with_tls(&connector(&url)).await.unwrap_err());
        assert!(message.contains(reason), "{message}");
        assert!(!message.contains(PASSWORD), "{message}");
    }
}
