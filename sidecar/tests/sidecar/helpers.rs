//! Shared test fixtures: a fresh database per test, the real binary with its
//! environment, a real S3-compatible server (moto), a fault-injecting proxy
//! in front of it, a throwaway PostgreSQL cluster with password auth, and
//! tmpfs mounts.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use todo_sidecar::configuration::Settings;

/// The start of a pg_dump stand-in script
/// ([`Sidecar::use_pg_dump_script`]) that answers `--version` as the real
/// pg_dump does, so the version check passes and the script's own behaviour
/// follows.
pub const PG_DUMP_WITH_THE_REAL_VERSION: &str =
    "#!/bin/sh\nif [ \"$1\" = --version ]; then exec pg_dump --version; fi\n";

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_todo-sidecar");

/// Admin URL of the test server (`TEST_DATABASE_URL`).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A one-value query on the admin database.
pub fn admin_query(sql: &str) -> String {
    let mut admin =
        PgConnection::establish(&admin_url()).expect("the test PostgreSQL server is reachable");
    let row: Value = diesel::sql_query(sql)
        .get_result(&mut admin)
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    row.value
}

/// Polls `check` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

/// A database of a random name, dropped at the end of the test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        let name = format!("sidecar_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin =
            PgConnection::establish(&admin_url()).expect("the test PostgreSQL server is reachable");
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("creates the test database");
        let url = todo_common::pg_url::replace_database_name(&admin_url(), &name);
        TestDb { name, url }
    }

    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("connects to the test database")
    }

    /// A session holding an ACCESS EXCLUSIVE lock on `table` until it runs
    /// `ROLLBACK` (or is dropped).
    pub fn lock_table(&self, table: &str) -> PgConnection {
        let mut holder = self.connect();
        holder
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
            ))
            .expect("locks the table");
        holder
    }

    pub fn execute(&self, sql: &str) {
        self.connect()
            .batch_execute(sql)
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    pub fn query(&self, sql: &str) -> String {
        let row: Value = diesel::sql_query(sql)
            .get_result(&mut self.connect())
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        row.value
    }

    /// A small schema with a few hundred rows in two tables.
    pub fn seed_small(&self) {
        self.execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int);
             INSERT INTO items SELECT i, 'item ' || i, i % 7 FROM generate_series(1, 500) i;
             CREATE TABLE notes (id serial PRIMARY KEY, body text);
             INSERT INTO notes (body) SELECT md5(i::text) FROM generate_series(1, 200) i;",
        );
    }

    /// Adds `rows` rows of random hex (compresses about 2:1, ~65 bytes a row).
    pub fn add_random_rows(&self, rows: u32) {
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS blobs (id int, v text);
             INSERT INTO blobs SELECT i, md5(random()::text) || md5(random()::text) FROM generate_series(1, {rows}) i;"
        ));
    }

    /// md5 of every user table's rows, sorted, by table name.
    pub fn table_hashes(&self) -> BTreeMap<String, String> {
        let tables = self.query(
            "SELECT coalesce(string_agg(quote_ident(schemaname) || '.' || quote_ident(tablename), ',' ORDER BY 1), '') AS value
             FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        );
        tables
            .split(',')
            .filter(|table| !table.is_empty())
            .map(|table| {
                let hash = self.query(&format!(
                    "SELECT coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), 'empty') AS value FROM {table} t"
                ));
                (table.to_string(), hash)
            })
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&admin_url()) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A finished run of the binary.
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts the exit code, showing the output when it differs.
    pub fn assert_code(&self, expected: i32) -> &Outcome {
        assert_eq!(
            self.code,
            Some(expected),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts that stderr's plain (non-JSON) lines contain `text`.
    pub fn assert_message(&self, text: &str) -> &Outcome {
        let plain: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| !line.starts_with('{'))
            .collect();
        assert!(
            plain.iter().any(|line| line.contains(text)),
            "expected a message containing {text:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }
}

/// The sidecar binary configured for one test: a database and a store.
pub struct Sidecar {
    pub vars: HashMap<String, String>,
    pub store_dir: PathBuf,
    _temp: tempfile::TempDir,
}

impl Sidecar {
    /// A sidecar backing up `db` into a fresh local directory.
    pub fn local(db: &TestDb) -> Sidecar {
        let temp = tempfile::tempdir().expect("creates a temporary directory");
        let store_dir = temp.path().join("store");
        let mut sidecar = Sidecar {
            vars: HashMap::new(),
            store_dir: store_dir.clone(),
            _temp: temp,
        };
        sidecar
            .set("DATABASE_URL", &db.url)
            .set(
                "SIDECAR__BACKUP__STORE__PATH",
                store_dir.to_str().expect("UTF-8 path"),
            )
            .set("SIDECAR__ADMIN__PORT", "0")
            .set("SIDECAR__DATABASE__CONNECT_TIMEOUT_SECONDS", "5");
        sidecar
    }

    /// A sidecar backing up `db` into `bucket` at `endpoint`.
    pub fn s3(db: &TestDb, endpoint: &str, bucket: &str) -> Sidecar {
        let mut sidecar = Sidecar::local(db);
        sidecar
            .set("SIDECAR__BACKUP__STORE__KIND", "s3")
            .set("SIDECAR__BACKUP__STORE__BUCKET", bucket)
            .set("SIDECAR__BACKUP__STORE__ENDPOINT", endpoint)
            .set("SIDECAR__BACKUP__STORE__PATH_STYLE", "true")
            .set("SIDECAR__BACKUP__STORE__PART_SIZE_BYTES", "5242880")
            .set("SIDECAR__BACKUP__STORE__MAX_RETRIES", "1")
            .set("SIDECAR__BACKUP__STORE__REQUEST_TIMEOUT_SECONDS", "30")
            .set("AWS_ACCESS_KEY_ID", "testing")
            .set("AWS_SECRET_ACCESS_KEY", "testing-secret")
            .set("AWS_REGION", "us-east-1");
        sidecar
    }

    pub fn set(&mut self, name: &str, value: &str) -> &mut Sidecar {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// A directory for the test's own files, removed with the sidecar.
    pub fn scratch_dir(&self) -> &Path {
        self._temp.path()
    }

    /// Writes `script` as an executable stand-in for pg_dump and points
    /// `backup.pg_dump_path` at it (see [`PG_DUMP_WITH_THE_REAL_VERSION`]).
    pub fn use_pg_dump_script(&mut self, script: &str) -> &mut Sidecar {
        let path = self._temp.path().join("pg_dump-stand-in");
        std::fs::write(&path, script).expect("writes the pg_dump script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("makes it executable");
        self.set(
            "SIDECAR__BACKUP__PG_DUMP_PATH",
            path.to_str().expect("UTF-8 path"),
        )
    }

    /// The settings the binary would load (for in-process calls).
    pub fn settings(&self) -> Settings {
        Settings::load_from(&self.vars).expect("valid test settings")
    }

    /// The binary with exactly this environment (plus PATH and HOME).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args(args).env_clear();
        for name in ["PATH", "HOME", "LANG"] {
            if let Ok(value) = std::env::var(name) {
                command.env(name, value);
            }
        }
        command.envs(&self.vars).stdin(Stdio::null());
        command
    }

    /// Runs a command to completion (bounded: a hang fails the test). Its
    /// output is read while it runs, so a child writing more than a pipe
    /// holds (64 KiB) never blocks on it.
    pub fn run(&self, args: &[&str]) -> Outcome {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts todo-sidecar");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
        let deadline = Instant::now() + Duration::from_secs(180);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waits") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "todo-sidecar {args:?} did not finish in 180 s\n{}",
                    stderr.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Outcome {
            code: status.code(),
            stdout: stdout.join().expect("the stdout reader ends"),
            stderr: stderr.join().expect("the stderr reader ends"),
        }
    }

    /// `backup list --json`, parsed.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let outcome = self.run(&["backup", "list", "--json"]);
        outcome.assert_code(0);
        outcome
            .stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON manifest per line"))
            .collect()
    }

    /// Files in the local store's snapshots directory.
    pub fn snapshot_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.store_dir.join("snapshots"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Kills a child process when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `todo-sidecar run`, waits for its "todo-sidecar started" line, and
/// returns the child, the admin port it logged, and its further stdout lines
/// (every line is asserted to be JSON: stdout carries nothing else).
pub fn spawn_run(sidecar: &Sidecar) -> (ChildGuard, u16, std::sync::mpsc::Receiver<String>) {
    let child = sidecar
        .command(&["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starts todo-sidecar run");
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().expect("stdout is piped");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let port = wait_for("the started log line", Duration::from_secs(60), || {
        let line = lines.recv_timeout(Duration::from_millis(100)).ok()?;
        let record: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("stdout carries only JSON: {line}"));
        (record["msg"] == "todo-sidecar started")
            .then(|| record["admin_port"].as_u64().expect("admin_port") as u16)
    });
    (guard, port, lines)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binds port 0")
        .port()
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A real S3-compatible server (moto) on a free loopback port.
pub struct Moto {
    pub port: u16,
    _child: ChildGuard,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts moto (pip install 'moto[server]')");
        let mut guard = ChildGuard(child);
        wait_for("moto to answer", Duration::from_secs(60), || {
            if let Ok(Some(status)) = guard.0.try_wait() {
                panic!("moto exited at start-up ({status}); is `moto[server]` installed?");
            }
            http(port, "GET", "/").map(|_| ())
        });
        Moto {
            port,
            _child: guard,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A moto server with `bucket` created.
    pub fn with_bucket(bucket: &str) -> Moto {
        let moto = Moto::start();
        moto.create_bucket(bucket);
        moto
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = http(self.port, "PUT", &format!("/{bucket}")).expect("moto answers");
        assert_eq!(status, 200, "create bucket: {body}");
    }

    /// Object keys in the bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) =
            http(self.port, "GET", &format!("/{bucket}?list-type=2")).expect("moto answers");
        assert_eq!(status, 200, "list: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn pending_uploads(&self, bucket: &str) -> usize {
        let (status, body) =
            http(self.port, "GET", &format!("/{bucket}?uploads")).expect("moto answers");
        assert_eq!(status, 200, "list uploads: {body}");
        body.matches("<UploadId>").count()
    }
}

/// A transparent HTTP proxy in front of moto that answers 500 to the
/// requests a rule picks (everything else is forwarded, one request per
/// connection), or that sends answers at a bounded rate (a slow link).
pub struct FaultyProxy {
    pub port: u16,
    pub injected: Arc<AtomicUsize>,
}

impl FaultyProxy {
    /// Fails every UploadPart whose part number is `fail_from_part` or more.
    pub fn start(upstream_port: u16, fail_from_part: u32) -> FaultyProxy {
        FaultyProxy::failing(upstream_port, move |request_line| {
            let part = request_line
                .split(['?', '&', ' '])
                .find_map(|field| field.strip_prefix("partNumber="))
                .and_then(|number| number.parse::<u32>().ok());
            request_line.starts_with("PUT ") && part.is_some_and(|number| number >= fail_from_part)
        })
    }

    /// Fails every request whose request line (`PUT /bucket/key?… HTTP/1.1`)
    /// `fails` picks.
    pub fn failing(
        upstream_port: u16,
        fails: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> FaultyProxy {
        FaultyProxy::spawn(upstream_port, Arc::new(fails), None)
    }

    /// Forwards everything, sending answers at `bytes_per_second`.
    pub fn throttled(upstream_port: u16, bytes_per_second: usize) -> FaultyProxy {
        FaultyProxy::spawn(
            upstream_port,
            Arc::new(|_: &str| false),
            Some(bytes_per_second),
        )
    }

    fn spawn(upstream_port: u16, fails: Arc<FailRule>, rate: Option<usize>) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds the proxy");
        let port = listener.local_addr().expect("has an address").port();
        let injected = Arc::new(AtomicUsize::new(0));
        let counter = injected.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let counter = counter.clone();
                let fails = fails.clone();
                std::thread::spawn(move || {
                    let _ = proxy_one(client, upstream_port, (&*fails, rate), &counter);
                });
            }
        });
        FaultyProxy { port, injected }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Which requests a [`FaultyProxy`] fails.
type FailRule = dyn Fn(&str) -> bool + Send + Sync;

fn proxy_one(
    client: TcpStream,
    upstream_port: u16,
    (fails, rate): (&FailRule, Option<usize>),
    injected: &AtomicUsize,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if request_line.is_empty() {
            request_line = line.clone();
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            content_length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.extend_from_slice(line.as_bytes());
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let mut client = client;
    if fails(&request_line) {
        injected.fetch_add(1, Ordering::SeqCst);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>injected by the test proxy</Message></Error>";
        write!(
            client,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return client.flush();
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.write_all(&head)?;
    upstream.write_all(&body)?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head_text = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut rewritten: String = head_text
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    rewritten.push_str("Connection: close\r\n");
    client.write_all(rewritten.as_bytes())?;
    // response[split..] is "\r\n\r\n" + body: one CRLF ended the last
    // header line above already.
    let rest = &response[(split + 2).min(response.len())..];
    match rate {
        None => client.write_all(rest)?,
        Some(rate) => {
            let chunk = (rate / 20).max(1);
            for piece in rest.chunks(chunk) {
                client.write_all(piece)?;
                client.flush()?;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    client.flush()
}

/// A tmpfs mounted for one test, unmounted at the end.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("creates the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("runs mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN)"
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    pub fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .expect("runs mount");
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A PostgreSQL cluster of its own with password (SCRAM) authentication.
pub struct PasswordCluster {
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
    _temp: tempfile::TempDir,
}

impl PasswordCluster {
    pub fn start(password: &str) -> PasswordCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .map(|major| PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")))
            .expect("a PostgreSQL major version directory");
        let temp = tempfile::tempdir().expect("creates a temporary directory");
        let data = temp.path().join("data");
        let password_file = temp.path().join("password");
        std::fs::write(&password_file, password).expect("writes the password file");
        // initdb and pg_ctl refuse to run as root.
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(temp.path())
            .status()
            .expect("runs chown");
        assert!(chown.success());
        let initdb = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8", "-D"])
            .arg(&data)
            .arg(format!("--pwfile={}", password_file.display()))
            .output()
            .expect("runs initdb");
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        let start = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-w", "-t", "60", "-l"])
            .arg(temp.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1",
                temp.path().display()
            ))
            .arg("start")
            .output()
            .expect("runs pg_ctl start");
        assert!(
            start.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&start.stderr)
        );
        PasswordCluster {
            port,
            data,
            bin,
            _temp: temp,
        }
    }
}

impl Drop for PasswordCluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

// --- The app's `/metrics` stand-in and the aggregating sidecar (aggregate tests).

/// What the fake app answers on `/metrics`.
#[derive(Clone)]
pub struct Answer {
    pub body: String,
    pub content_type: &'static str,
    pub delay: Duration,
}

/// A real HTTP server on 127.0.0.1:0 serving a settable exposition.
pub struct AppFixture {
    pub port: u16,
    answer: Arc<Mutex<Answer>>,
    /// `/metrics` requests received.
    pub requests: Arc<AtomicUsize>,
}

impl AppFixture {
    pub fn start(body: &str) -> AppFixture {
        let answer = Arc::new(Mutex::new(Answer {
            body: body.to_string(),
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            delay: Duration::ZERO,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds the fixture");
        let port = listener.local_addr().expect("has an address").port();
        let shared = (answer.clone(), Arc::new(AtomicUsize::new(0)));
        let requests = shared.1.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let shared = actix_web::web::Data::new(shared);
                actix_web::HttpServer::new(move || {
                    actix_web::App::new().app_data(shared.clone()).route(
                        "/metrics",
                        actix_web::web::get().to(
                            |state: actix_web::web::Data<(
                                Arc<Mutex<Answer>>,
                                Arc<AtomicUsize>,
                            )>| async move {
                                state.1.fetch_add(1, Ordering::SeqCst);
                                let answer = state.0.lock().expect("not poisoned").clone();
                                actix_web::rt::time::sleep(answer.delay).await;
                                actix_web::HttpResponse::Ok()
                                    .content_type(answer.content_type)
                                    .body(answer.body)
                            },
                        ),
                    )
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .expect("listens")
                .run()
                .await
                .expect("serves");
            });
        });
        AppFixture {
            port,
            answer,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    pub fn set(&self, change: impl FnOnce(&mut Answer)) {
        change(&mut self.answer.lock().expect("not poisoned"));
    }
}

/// A running `todo-sidecar run` (killed when dropped) and its admin port.
pub struct Running {
    _guard: ChildGuard,
    pub port: u16,
}

/// Starts `run` and waits for the aggregate component's first collection.
pub fn start_run(sidecar: &Sidecar) -> Running {
    let (guard, port, lines) = spawn_run(sidecar);
    // Keep draining stdout so the sidecar never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.iter() {});
    wait_for(
        "the aggregate component's first collection",
        Duration::from_secs(30),
        || {
            let (_, body) = http(port, "GET", "/health/ready")?;
            let ready: serde_json::Value = serde_json::from_str(&body).ok()?;
            let status = ready["components"]["aggregate"]["status"].as_str()?;
            (status == "ok" || status == "degraded").then_some(())
        },
    );
    Running {
        _guard: guard,
        port,
    }
}

/// A sidecar for `db` scraping `app_url`, with backups off.
pub fn sidecar_for(db: &TestDb, app_url: &str) -> Sidecar {
    let mut sidecar = Sidecar::local(db);
    sidecar
        .set("SIDECAR__BACKUP__ENABLED", "false")
        .set("SIDECAR__AGGREGATE__APP_METRICS_URL", app_url);
    sidecar
}

/// Writes `yaml` to a file in `dir` and points the sidecar at it.
pub fn with_config_file(sidecar: &mut Sidecar, dir: &tempfile::TempDir, yaml: &str) {
    let path = dir.path().join("sidecar.yaml");
    std::fs::write(&path, yaml).expect("writes the config file");
    sidecar.set("SIDECAR_CONFIG_FILE", path.to_str().expect("UTF-8 path"));
}

/// The sidecar's `/metrics` body.
pub fn scrape(port: u16) -> String {
    let (status, body) = http(port, "GET", "/metrics").expect("the sidecar answers /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The sidecar's `/metrics` body, and how long it took to come.
pub fn timed_scrape(port: u16) -> (String, Duration) {
    let started = Instant::now();
    let body = scrape(port);
    (body, started.elapsed())
}

/// The sidecar's `/health/ready` body.
pub fn readiness(port: u16) -> String {
    let (_, body) = http(port, "GET", "/health/ready").expect("the sidecar answers readiness");
    body
}

/// The value of the series written exactly as `series` (name and labels).
pub fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().expect("a number"),
        })
}

/// Lines of samples (not comments) whose name starts with `prefix`.
pub fn sample_lines<'a>(body: &'a str, prefix: &str) -> Vec<&'a str> {
    body.lines()
        .filter(|line| !line.starts_with('#') && line.starts_with(prefix))
        .collect()
}

/// Runs `promtool check metrics` on `body` and asserts it passes.
pub fn assert_promtool_accepts(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs promtool (Debian package prometheus)");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = body.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("promtool finishes");
    writer
        .join()
        .expect("writer thread")
        .expect("writes to promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition\n{body}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
