//! Test helpers: a fresh database per test, the application started exactly
//! as `main` starts it (on port 0), typed request helpers, and a throwaway
//! PostgreSQL cluster for tests that stop the database.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use secrecy::ExposeSecret;
use serde_json::Value;
use todo_app::configuration::Settings;
use todo_app::db::api_keys;
use todo_app::domain::Owner;
use todo_app::startup::{Application, ShutdownHandle};
use todo_common::pg_url::replace_database_name;
use uuid::Uuid;

/// The server every test database lives on; the CI script may point it elsewhere.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// The repository's `configuration/` directory.
pub fn configuration_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configuration")
}

/// Settings as `main` would load them for `database_url`, adjusted for tests:
/// loopback, port 0, no shutdown delay, small pool.
pub fn test_settings(database_url: &str) -> Settings {
    let vars = HashMap::from([
        ("DATABASE_URL".to_string(), database_url.to_string()),
        (
            "APP_CONFIG_DIR".to_string(),
            configuration_dir().display().to_string(),
        ),
    ]);
    let mut settings = Settings::load_from(&vars).expect("the test configuration loads");
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.server.workers = 2;
    settings.server.shutdown_readiness_delay_seconds = 0;
    settings.admin.host = "127.0.0.1".into();
    settings.admin.port = 0;
    settings
}

/// Creates an empty database with a random name and returns its URL.
pub fn create_database(server_url: &str) -> (String, String) {
    let name = format!("todo_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::establish(server_url).expect("the test PostgreSQL is reachable");
    diesel::sql_query(format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .expect("the test database is created");
    (name.clone(), replace_database_name(server_url, &name))
}

/// Drops a test database, disconnecting whoever still uses it.
pub fn drop_database(server_url: &str, name: &str) {
    if let Ok(mut admin) = PgConnection::establish(server_url) {
        let _ = diesel::sql_query(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
            .execute(&mut admin);
    }
}

/// A running application on its own database.
pub struct TestApp {
    pub address: String,
    pub admin_address: String,
    pub api_port: u16,
    pub database_url: String,
    pub client: reqwest::Client,
    pub shutdown: ShutdownHandle,
    pub server: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
    server_url: String,
    database_name: String,
    drop_database_on_exit: bool,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.drop_database_on_exit {
            drop_database(&self.server_url, &self.database_name);
        }
    }
}

/// Installs the rustls crypto provider the test clients and TLS servers use,
/// as the programs' `main` does (once per process).
pub use todo_common::http::install_crypto_provider;

pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("the test HTTP client builds")
}

/// Starts the application on a fresh database with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the application on a fresh database after `customize` adjusts its settings.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on_server(&admin_database_url(), true, customize).await
}

/// Starts the application on a fresh database of the server at `server_url`.
pub async fn spawn_app_on_server(
    server_url: &str,
    drop_database_on_exit: bool,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    let (database_name, database_url) = create_database(server_url);
    let mut settings = test_settings(&database_url);
    customize(&mut settings);
    let application = Application::build(settings.clone())
        .await
        .expect("the application builds");
    let api_port = application.port();
    let admin_port = application.admin_port();
    let shutdown = application.shutdown_handle();
    let server = actix_web::rt::spawn(application.run_until_stopped());
    let scheme = if settings.tls.cert_path.is_some() {
        "https"
    } else {
        "http"
    };
    TestApp {
        address: format!("{scheme}://127.0.0.1:{api_port}"),
        admin_address: format!("http://127.0.0.1:{admin_port}"),
        api_port,
        database_url,
        client: http_client(),
        shutdown,
        server,
        server_url: server_url.to_string(),
        database_name,
        drop_database_on_exit,
    }
}

impl TestApp {
    /// A direct connection to the app's database, for arranging and asserting.
    pub fn connection(&self) -> PgConnection {
        PgConnection::establish(&self.database_url).expect("the test database is reachable")
    }

    /// Creates an API key for `owner` and returns its token.
    pub fn create_key(&self, owner: &str) -> String {
        let (id, token) = self.create_key_with_id(owner);
        let _ = id;
        token
    }

    /// Creates an API key for `owner` and returns its id and token.
    pub fn create_key_with_id(&self, owner: &str) -> (Uuid, String) {
        let new = todo_app::auth::generate_token();
        let owner = Owner::parse(owner).expect("a valid owner name");
        api_keys::insert(&mut self.connection(), new.id, &owner, &new.secret_hash)
            .expect("the key is stored");
        (new.id, new.token.expose_secret().to_string())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_todo(&self, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/todos"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a todo and returns its JSON, asserting 201.
    pub async fn create_todo(&self, token: &str, title: &str) -> Value {
        let response = self
            .post_todo(token, &serde_json::json!({"title": title}))
            .await;
        assert_eq!(response.status(), 201, "creating {title:?}");
        response.json().await.expect("JSON body")
    }

    pub async fn get_todo(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/todos/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn list_todos(&self, token: &str, query: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/todos{query}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn patch_todo(&self, token: &str, id: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(&format!("/api/todos/{id}")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete_todo(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/api/todos/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.admin_address))
            .send()
            .await
            .expect("request sent")
    }
}

/// Asserts the error shape of ARCHITECTURE.md and returns the error code.
pub async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert!(
        response.headers().contains_key("x-request-id"),
        "every response carries X-Request-Id"
    );
    let body: Value = response.json().await.expect("an error has a JSON body");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error.code missing in {body}"));
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message missing in {body}"
    );
    code.to_string()
}

/// One HTTP/1.1 connection written by hand, for what a client library would
/// not send: duplicate headers, slow or broken bodies, malformed framing.
pub struct RawConnection<S = tokio::net::TcpStream> {
    stream: S,
    /// Bytes read past the end of the last answer.
    pending: Vec<u8>,
}

/// One answer read off a [`RawConnection`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Longest wait for any answer on a raw connection.
const RAW_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl RawConnection {
    /// A plain TCP connection to the API port.
    pub async fn open(port: u16) -> RawConnection {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("the API port accepts connections");
        RawConnection::over(stream)
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> RawConnection<S> {
    /// A connection over an established stream (a TLS one, say).
    pub fn over(stream: S) -> RawConnection<S> {
        RawConnection {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Writes `bytes` as they are (may fail once the server has closed).
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes.as_ref()).await
    }

    /// Reads one answer; `to_head` when it answers a `HEAD` (no body follows).
    pub async fn read_response(&mut self, to_head: bool) -> RawResponse {
        let head_end = loop {
            if let Some(at) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            assert!(
                self.read_more().await > 0,
                "the server closed before answering"
            );
        };
        let head = String::from_utf8(self.pending[..head_end].to_vec()).expect("an ASCII head");
        self.pending.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("a status in {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        let length = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, value)| value.parse::<usize>().expect("a numeric Content-Length"));
        let body_length = match (to_head || status == 204 || status == 304, length) {
            (true, _) => 0,
            (false, Some(length)) => length,
            (false, None) => {
                // No length: the body ends when the server closes.
                while self.read_more().await > 0 {}
                self.pending.len()
            }
        };
        while self.pending.len() < body_length {
            assert!(self.read_more().await > 0, "the server closed mid-body");
        }
        let body = self.pending.drain(..body_length).collect();
        RawResponse {
            status,
            headers,
            body,
        }
    }

    /// Whether the server closes the connection within `timeout` (a read
    /// sees its end, or a reset).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buffer)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }

    async fn read_more(&mut self) -> usize {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 8192];
        let read = tokio::time::timeout(RAW_READ_TIMEOUT, self.stream.read(&mut buffer))
            .await
            .expect("the server answers within 10 s")
            .unwrap_or(0);
        self.pending.extend_from_slice(&buffer[..read]);
        read
    }
}

/// Sends `request` on a new connection and reads the answer.
pub async fn raw_exchange(port: u16, request: impl AsRef<[u8]>) -> RawResponse {
    let request = request.as_ref();
    let mut connection = RawConnection::open(port).await;
    connection.send(request).await.expect("the request is sent");
    connection
        .read_response(request.starts_with(b"HEAD "))
        .await
}

impl RawResponse {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "a JSON body ({error}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the error contract (status, `X-Request-Id`, the JSON error
    /// shape) and returns the error code.
    pub fn error_code(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("x-request-id").is_some(),
            "X-Request-Id: {self:?}"
        );
        let body = self.json();
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error.message missing in {body}"
        );
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("error.code missing in {body}"))
            .to_string()
    }
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A PostgreSQL cluster of its own, for tests that stop the database. Runs as
/// the `postgres` user when the tests run as root (initdb refuses root).
pub struct ThrowawayCluster {
    pub port: u16,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    run_as_postgres: bool,
}

impl ThrowawayCluster {
    /// initdb + start on a free port, trust authentication on loopback.
    pub fn start() -> ThrowawayCluster {
        let bin_dir = postgres_bin_dir();
        let run_as_postgres = is_root();
        let data_dir = std::env::temp_dir().join(format!("todo-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir).expect("the cluster directory is created");
        if run_as_postgres {
            chown_to_postgres(&data_dir);
        }
        let cluster = ThrowawayCluster {
            port: free_port(),
            data_dir,
            bin_dir,
            run_as_postgres,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data_dir.to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        cluster.start_server();
        cluster
    }

    /// The server URL (maintenance database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data_dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir.to_str().expect("utf-8 path"),
                "-o",
                &options,
                "-l",
                self.data_dir
                    .join("server.log")
                    .to_str()
                    .expect("utf-8 path"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// The cluster's data directory (owned by the server's user).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Turns TLS on with this certificate chain and key (PEM, written into
    /// the data directory with mode 0600), refuses plaintext TCP connections
    /// (`hostnossl … reject`), and restarts the server.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        for (name, contents) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = self.data_dir.join(name);
            std::fs::write(&path, contents).expect("the TLS file is written");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("the TLS file is made private");
            if self.run_as_postgres {
                chown_to_postgres(&path);
            }
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))
            .and_then(|mut conf| {
                writeln!(
                    conf,
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
                )
            })
            .expect("postgresql.conf is extended");
        std::fs::write(
            self.data_dir.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n\
             hostnossl all all ::/0 reject\n",
        )
        .expect("pg_hba.conf is written");
        self.stop_server();
        self.start_server();
    }

    /// Stops the server immediately (connections are cut, as in a crash or failover).
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir.to_str().expect("utf-8 path"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Stops every process of the cluster (SIGSTOP): connections stay open
    /// and nothing answers, as with a frozen host.
    pub fn freeze(&self) {
        self.signal_all("-STOP");
    }

    /// Lets a frozen cluster run again.
    pub fn thaw(&self) {
        self.signal_all("-CONT");
    }

    fn signal_all(&self, signal: &str) {
        let pid_file = std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .expect("the cluster is running");
        let postmaster = pid_file.lines().next().expect("the pid is the first line");
        // The backends first, so none is left running while the postmaster stops.
        let _ = Command::new("pkill")
            .args([signal, "-P", postmaster])
            .status();
        let killed = Command::new("kill")
            .args([signal, postmaster])
            .status()
            .expect("kill runs");
        assert!(killed.success(), "kill {signal} {postmaster}");
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin_dir.join(tool);
        let output = if self.run_as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap_or_else(|error| panic!("{} could not run: {error}", program.display()));
        assert!(
            output.status.success(),
            "{tool} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        // A frozen cluster would never stop.
        if self.data_dir.join("postmaster.pid").exists() {
            self.thaw();
        }
        let program = self.bin_dir.join("pg_ctl");
        let data_dir = self.data_dir.to_str().unwrap_or_default().to_string();
        let args = ["-D", &data_dir, "-m", "immediate", "stop"];
        let _ = if self.run_as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `/usr/lib/postgresql/<newest major>/bin`, where Debian keeps initdb and pg_ctl.
fn postgres_bin_dir() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries are installed (/usr/lib/postgresql)")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let newest = versions
        .last()
        .expect("a PostgreSQL major version is installed");
    PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(path)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown postgres {}", path.display());
}

/// `todo-app serve` running as a separate process (for what is process-wide:
/// logging, tracing, signals), with its stdout collected line by line.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub address: String,
    pub admin_address: String,
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts the binary on `database_url` with extra environment variables,
    /// and waits until it logs that it listens.
    pub fn start(database_url: &str, env: &[(&str, &str)]) -> ServerProcess {
        use std::io::BufRead;
        let mut command = Command::new(env!("CARGO_BIN_EXE_todo-app"));
        command
            .env("DATABASE_URL", database_url)
            .env("APP_CONFIG_DIR", configuration_dir())
            .env("APP__SERVER__PORT", "0")
            .env("APP__ADMIN__PORT", "0")
            .env("APP__SERVER__WORKERS", "2")
            .env_remove("APP_ENVIRONMENT")
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_CERTIFICATE")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
            .env("LOG_LEVEL", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("todo-app starts");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ports_tx, ports_rx) = std::sync::mpsc::channel();
        let reader = {
            let stdout = std::sync::Arc::clone(&stdout);
            let pipe = child.stdout.take().expect("stdout is piped");
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(entry) = serde_json::from_str::<Value>(&line)
                        && entry["msg"] == "todo-app listening"
                    {
                        let _ = ports_tx.send((
                            entry["api_port"].as_u64().unwrap_or(0),
                            entry["admin_port"].as_u64().unwrap_or(0),
                        ));
                    }
                    stdout.lock().expect("never poisoned").push(line);
                }
            })
        };
        let (api_port, admin_port) = ports_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("todo-app logs that it listens");
        ServerProcess {
            child,
            address: format!("http://127.0.0.1:{api_port}"),
            admin_address: format!("http://127.0.0.1:{admin_port}"),
            stdout,
            reader: Some(reader),
        }
    }

    /// Sends SIGTERM, waits for the exit, and returns the exit code and every stdout line.
    pub fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = self.child.wait().expect("todo-app exits");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let lines = self.stdout.lock().expect("never poisoned").clone();
        (status.code(), lines)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, migrated database with one API key; returns (name, url, token).
pub fn prepared_database(owner: &str) -> (String, String, String) {
    let (name, url) = create_database(&admin_database_url());
    let mut connection = PgConnection::establish(&url).expect("the test database is reachable");
    todo_app::db::migrations::run_pending_migrations(
        &mut connection,
        std::time::Duration::from_secs(60),
    )
    .expect("migrations run");
    let new = todo_app::auth::generate_token();
    api_keys::insert(
        &mut connection,
        new.id,
        &Owner::parse(owner).expect("a valid owner"),
        &new.secret_hash,
    )
    .expect("the key is stored");
    (name, url, new.token.expose_secret().to_string())
}

/// The value of the series `name{labels}` in a text exposition (labels as rendered).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}
