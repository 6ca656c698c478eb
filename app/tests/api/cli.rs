//! The `todo-app keys …` and `migrate` commands, run as the real binary.

use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::helpers::{
    admin_database_url, configuration_dir, eventually, spawn_app, spawn_app_on_server,
};

fn todo_app(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("APP_CONFIG_DIR", configuration_dir())
        .env_remove("APP_ENVIRONMENT")
        .env_remove("RUST_LOG")
        .env_remove("LOG_LEVEL")
        .output()
        .expect("todo-app runs")
}

#[actix_web::test]
async fn keys_create_prints_only_a_working_token_on_stdout() {
    let app = spawn_app().await;

    let output = todo_app(&app.database_url, &["keys", "create", "--owner", "dana"]);

    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is the token alone: {stdout:?}");
    let token = lines[0];
    assert!(token.starts_with("todo_"));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("shown only once"), "{stderr}");
    assert!(
        !stderr.contains(token),
        "the token is not repeated on stderr"
    );
    assert_eq!(app.list_todos(token, "").await.status(), 200);
}

#[actix_web::test]
async fn keys_create_rejects_an_invalid_owner() {
    let app = spawn_app().await;

    let output = todo_app(&app.database_url, &["keys", "create", "--owner", ""]);

    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--owner"));
}

#[actix_web::test]
async fn keys_list_shows_keys_but_never_secrets() {
    let app = spawn_app().await;
    let (id, token) = app.create_key_with_id("erin");

    let table = todo_app(&app.database_url, &["keys", "list"]);
    let json = todo_app(&app.database_url, &["keys", "list", "--json"]);

    assert!(table.status.success() && json.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    let json = String::from_utf8(json.stdout).unwrap();
    assert!(table.contains(&id.to_string()) && table.contains("erin") && table.contains("active"));
    let entry: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(entry["id"], id.to_string());
    assert_eq!(entry["owner"], "erin");
    // The secret and its stored hash, in every form a listing could print them.
    let raw = URL_SAFE_NO_PAD.decode(&token["todo_".len()..]).unwrap();
    let secret = &raw[16..];
    let hash = Sha256::digest(secret);
    let forms = [
        token["todo_".len() + 22..].to_string(),
        hex::encode(secret),
        hex::encode(hash),
        URL_SAFE_NO_PAD.encode(hash),
    ];
    for output in [&table, &json] {
        for form in &forms {
            assert!(!output.contains(form.as_str()), "{form} is in the listing");
        }
        assert!(!output.contains("hash"), "no hash in the listing");
    }
}

#[actix_web::test]
async fn keys_revoke_takes_effect_on_every_replica_within_seconds() {
    // Two replicas sharing one database, each with its own key cache.
    let first = spawn_app_with_short_cache().await;
    let second_url = first.database_url.clone();
    let second = todo_app::startup::Application::build({
        let mut settings = crate::helpers::test_settings(&second_url);
        settings.auth.key_cache_ttl_seconds = 1;
        settings
    })
    .await
    .unwrap();
    let second_address = format!("http://127.0.0.1:{}", second.port());
    actix_web::rt::spawn(second.run_until_stopped());
    let (id, token) = first.create_key_with_id("frank");
    let second_list = || {
        first
            .client
            .get(format!("{second_address}/api/todos"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(first.list_todos(&token, "").await.status(), 200);
    assert_eq!(second_list().await.unwrap().status(), 200);

    let output = todo_app(&first.database_url, &["keys", "revoke", &id.to_string()]);

    assert!(output.status.success(), "{output:?}");
    let refused_everywhere = eventually(Duration::from_secs(5), || async {
        first.list_todos(&token, "").await.status() == 401
            && second_list().await.unwrap().status() == 401
    })
    .await;
    assert!(refused_everywhere);
    let again = todo_app(&first.database_url, &["keys", "revoke", &id.to_string()]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already revoked"));
}

async fn spawn_app_with_short_cache() -> crate::helpers::TestApp {
    spawn_app_on_server(&admin_database_url(), true, |settings| {
        settings.auth.key_cache_ttl_seconds = 1;
    })
    .await
}

#[actix_web::test]
async fn revoking_an_unknown_key_exits_3() {
    let app = spawn_app().await;

    let output = todo_app(
        &app.database_url,
        &["keys", "revoke", &uuid::Uuid::new_v4().to_string()],
    );

    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no API key with id"));
}

#[actix_web::test]
async fn keys_commands_on_an_unmigrated_database_say_to_migrate() {
    let (name, url) = crate::helpers::create_database(&admin_database_url());

    let output = todo_app(&url, &["keys", "list"]);

    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("todo-app migrate"));
    crate::helpers::drop_database(&admin_database_url(), &name);
}

#[test]
fn check_config_accepts_a_valid_configuration_without_touching_the_database() {
    // Nothing listens there: a check that connected would fail.
    let unreachable = format!(
        "postgres://nobody@127.0.0.1:{}/nothing",
        crate::helpers::free_port()
    );
    let started = std::time::Instant::now();

    let output = todo_app(&unreachable, &["check-config"]);

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the configuration is valid"), "{stderr}");
    assert!(
        !stderr.contains("nobody@"),
        "no URL in the report: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn serve_refuses_a_database_tls_setting_the_connections_cannot_honour() {
    // verify-full with a root certificate that cannot be read: serve stops
    // before it listens, naming the option, never the password.
    let url = "postgres://app:hunter2@127.0.0.1:1/todo?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
    let output = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .arg("serve")
        .env("DATABASE_URL", url)
        .env("APP_CONFIG_DIR", configuration_dir())
        .env("APP__DATABASE__MIGRATE_ON_START", "false")
        .env("APP__SERVER__PORT", "0")
        .env("APP__ADMIN__PORT", "0")
        .env_remove("APP_ENVIRONMENT")
        .output()
        .expect("todo-app runs");

    assert!(!output.status.success(), "{output:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("sslrootcert"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn check_config_refuses_an_invalid_configuration_naming_the_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .arg("check-config")
        .env("APP_CONFIG_DIR", configuration_dir())
        .env("APP__AUTH__RATE_LIMIT_BRUST", "3")
        .env_remove("APP_ENVIRONMENT")
        .output()
        .expect("todo-app runs");

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("rate_limit_brust"));
}

#[test]
fn check_config_reads_the_production_file_from_app_config_dir() {
    let dir = std::env::temp_dir().join(format!("todo-check-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("production.yaml"),
        "server:\n  shutdown_timeout_secs: 3\n",
    )
    .unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_todo-app"))
        .arg("check-config")
        .env("APP_CONFIG_DIR", &dir)
        .env("APP_ENVIRONMENT", "production")
        .output()
        .expect("todo-app runs");

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("shutdown_timeout_secs"));
    std::fs::remove_dir_all(dir).unwrap();
}
