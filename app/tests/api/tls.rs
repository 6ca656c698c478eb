//! HTTPS on the API port when `tls.cert_path` and `tls.key_path` are set.

use std::path::PathBuf;

use crate::helpers::{admin_database_url, install_crypto_provider, spawn_app_with, test_settings};

struct TestCertificate {
    dir: PathBuf,
    cert_pem: String,
}

impl TestCertificate {
    fn generate() -> TestCertificate {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let dir = std::env::temp_dir().join(format!("todo-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert_pem = certified.cert.pem();
        std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
        TestCertificate { dir, cert_pem }
    }
}

impl Drop for TestCertificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[actix_web::test]
async fn with_a_certificate_the_api_serves_https_only() {
    let certificate = TestCertificate::generate();
    let cert_path = certificate.dir.join("cert.pem");
    let key_path = certificate.dir.join("key.pem");
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
