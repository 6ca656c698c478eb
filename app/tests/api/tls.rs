//! HTTPS on the API port when `tls.cert_path` and `tls.key_path` are set,
//! and a renewed certificate picked up without a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::helpers::{
    RawConnection, TestApp, admin_database_url, eventually, install_crypto_provider, sample,
    spawn_app_with, test_settings,
};

struct TestCertificate {
    dir: PathBuf,
    cert_pem: String,
    key_pem: String,
}

impl TestCertificate {
    fn generate() -> TestCertificate {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let dir = std::env::temp_dir().join(format!("todo-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let certificate = TestCertificate {
            dir,
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        };
        certificate.install(&certificate.cert_pem, &certificate.key_pem);
        certificate
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Replaces both files, each by a rename (as a Secret volume changes).
    fn install(&self, cert_pem: &str, key_pem: &str) {
        for (path, pem) in [(self.key_path(), key_pem), (self.cert_path(), cert_pem)] {
            let staged = path.with_extension("new");
            std::fs::write(&staged, pem).unwrap();
            std::fs::rename(&staged, &path).unwrap();
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()
    }
}

/// A TLS client trusting every certificate in `trusted`.
fn tls_connector(trusted: &[&TestCertificate]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in trusted {
        roots.add(certificate.der()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type TlsConnection = RawConnection<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A new TLS connection to the API port.
async fn connect_tls(connector: &tokio_rustls::TlsConnector, port: u16) -> TlsConnection {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the TLS handshake succeeds");
    RawConnection::over(stream)
}

/// The certificate the server presented on `connection`.
fn presented(connection: &TlsConnection) -> CertificateDer<'static> {
    connection.stream().get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Sends `GET /api/todos` on `connection` (keeping it open) and returns the status.
async fn list_status(connection: &mut TlsConnection, token: &str) -> u16 {
    connection
        .send(format!(
            "GET /api/todos HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
        ))
        .await
        .unwrap();
    connection.read_response(false).await.status
}

impl Drop for TestCertificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[actix_web::test]
async fn with_a_certificate_the_api_serves_https_only() {
    let certificate = TestCertificate::generate();
    let cert_path = certificate.cert_path();
    let key_path = certificate.key_path();
    let app = spawn_app_with(|settings| {
        settings.tls.cert_path = Some(cert_path);
        settings.tls.key_path = Some(key_path);
    })
    .await;
    let token = app.create_key("alice");
    install_crypto_provider();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certificate.cert_pem.as_bytes()).unwrap(),
        )
        .build()
        .unwrap();

    let https = client
        .get(format!("https://localhost:{}/api/todos", app.api_port))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let plain = client
        .get(format!("http://127.0.0.1:{}/api/todos", app.api_port))
        .bearer_auth(&token)
        .send()
        .await;

    assert_eq!(https.status(), 200);
    assert!(
        plain.is_err() || plain.unwrap().status().is_client_error(),
        "plain HTTP is not served on the TLS port"
    );
    assert_eq!(
        app.admin_get("/health/live").await.status(),
        200,
        "admin stays plain HTTP"
    );
}

#[actix_web::test]
async fn an_unreadable_certificate_stops_start_up_with_the_key_named() {
    let mut settings = test_settings(&admin_database_url());
    settings.database.migrate_on_start = false;
    settings.tls.cert_path = Some(PathBuf::from("/nonexistent/cert.pem"));
    settings.tls.key_path = Some(PathBuf::from("/nonexistent/key.pem"));

    let error = match todo_app::startup::Application::build(settings).await {
        Ok(_) => panic!("start-up must fail"),
        Err(error) => format!("{error:#}"),
    };

    assert!(error.contains("tls.cert_path"), "{error}");
}

#[actix_web::test]
async fn a_renewed_certificate_is_served_without_dropping_open_connections() {
    let first = TestCertificate::generate();
    let renewed = TestCertificate::generate();
    let app = spawn_app_reloading_every_second(&first).await;
    let token = app.create_key("alice");
    let connector = tls_connector(&[&first, &renewed]);
    let mut open = connect_tls(&connector, app.api_port).await;
    assert_eq!(list_status(&mut open, &token).await, 200);
    assert_eq!(presented(&open), first.der());

    first.install(&renewed.cert_pem, &renewed.key_pem);

    let served = eventually(Duration::from_secs(10), || async {
        presented(&connect_tls(&connector, app.api_port).await) == renewed.der()
    })
    .await;
    assert!(served, "new connections get the renewed certificate");
    assert_eq!(
        list_status(&mut open, &token).await,
        200,
        "the connection opened before the renewal still serves"
    );
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(
            &metrics,
            r#"todo_tls_certificate_reloads_total{result="success"}"#
        ),
        Some(1.0)
    );
}

#[actix_web::test]
async fn a_broken_renewal_keeps_the_current_certificate_until_a_good_one_arrives() {
    let first = TestCertificate::generate();
    let renewed = TestCertificate::generate();
    let app = spawn_app_reloading_every_second(&first).await;
    let connector = tls_connector(&[&first, &renewed]);

    // The renewed certificate with the old key: not a usable pair.
    first.install(&renewed.cert_pem, &first.key_pem);
    let refused = eventually(Duration::from_secs(10), || async {
        let metrics = app.admin_get("/metrics").await.text().await.unwrap();
        sample(
            &metrics,
            r#"todo_tls_certificate_reloads_total{result="failure"}"#,
        ) == Some(1.0)
    })
    .await;
    assert!(refused, "the mismatched pair is refused and counted once");
    assert_eq!(
        presented(&connect_tls(&connector, app.api_port).await),
        first.der(),
        "the previous certificate is still served"
    );

    first.install(&renewed.cert_pem, &renewed.key_pem);
    let served = eventually(Duration::from_secs(10), || async {
        presented(&connect_tls(&connector, app.api_port).await) == renewed.der()
    })
    .await;
    assert!(served, "the completed renewal is served");
}

/// A TLS server on `certificate`'s files that looks for a renewal every second.
async fn spawn_app_reloading_every_second(certificate: &TestCertificate) -> TestApp {
    let (cert_path, key_path) = (certificate.cert_path(), certificate.key_path());
    spawn_app_with(|settings| {
        settings.tls.cert_path = Some(cert_path);
        settings.tls.key_path = Some(key_path);
        settings.tls.reload_interval_seconds = 1;
    })
    .await
}
