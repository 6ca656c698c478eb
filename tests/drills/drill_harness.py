"""The whole-pod drill harness: what a pod runs in a cluster, on one machine.

Owns every process a drill starts and how it is started, watched and stopped:
a throwaway PostgreSQL cluster (stoppable and freezable), `todo-app` with TLS
on, `todo-sidecar run` (backups to a local store, log shipping, aggregation),
the Loki- and Elasticsearch-format log receivers, the Alertmanager webhook
receiver, Prometheus and Alertmanager, plus the waits (deadlines, never fixed
sleeps) and the bounded load generator the drills share.

Every process is registered with a `Pod`, which stops them all whatever
happens (the `pod` fixture in conftest.py calls `Pod.close`), and whose
`report()` gives the tails of their logs for a failing drill's message.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import gzip
import http.server
import ipaddress
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable


import requests
import urllib3


from suite_support import free_port  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)

# The drills talk to the app's self-signed certificate through `verify=`;
# this only silences urllib3's warning for the plain-HTTP admin endpoints.
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

IS_ROOT = os.geteuid() == 0
LOG_TAIL_LINES = 25


class DrillTimeout(AssertionError):
    """A wait ran past its deadline; the message says what was last seen."""


def wait_until(what: str, check: Callable[[], object], timeout: float,
               interval: float = 0.1, seen: Callable[[], str] | None = None):
    """Calls `check` until it returns something truthy and returns that; past
    `timeout` seconds raises DrillTimeout naming `what`, the last value or
    exception, and `seen()` (e.g. an alert's state and its expression's value)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = check()
        except Exception as error:  # the thing waited for may not answer yet
            last = f"{type(error).__name__}: {error}"
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            extra = ""
            if seen is not None:
                try:
                    extra = "\n" + seen()
                except Exception as error:
                    extra = f"\n(could not describe the state: {error})"
            raise DrillTimeout(f"{what}: not within {timeout:.1f} s; last seen: {last!r}{extra}")
        time.sleep(interval)


def tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(content[-lines:])


def shared_temp_dir(prefix: str) -> pathlib.Path:
    """A temporary directory the `postgres` user can reach (pytest's tmp_path
    lives under a root-only directory), removed by the caller."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------
# Processes


class Service:
    """One long-running process, its output in a log file, started in its own
    process group so a stop reaches its children (pg_dump under the sidecar)."""

    def __init__(self, name: str, argv: list[str], log_path: pathlib.Path,
                 env: dict[str, str] | None = None, cwd: pathlib.Path | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    def start(self) -> "Service":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        environment = dict(os.environ)
        environment.update(self.env or {})
        self.process = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=environment, cwd=self.cwd, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """The exit code; DrillTimeout when the process is still running."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise DrillTimeout(f"{self.name} still running {timeout} s later:\n{tail(self.log_path)}")

    def kill9(self) -> None:
        """SIGKILL to the process (not its group: a crash kills the program,
        its children, e.g. pg_dump, are orphaned as they would be)."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL to the whole group past `timeout`."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # children left behind, too
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait(10)

    def report(self) -> str:
        state = "running" if self.running() else f"exited {self.process.returncode if self.process else '-'}"
        return f"--- {self.name} ({state}), last lines of {self.log_path}:\n{tail(self.log_path)}"


class Pod:
    """Everything one drill started, stopped in reverse order by `close()`."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self._closers: list[tuple[str, Callable[[], None]]] = []
        self._reports: list[Callable[[], str]] = []

    def on_close(self, name: str, closer: Callable[[], None]) -> None:
        self._closers.append((name, closer))

    def describe_with(self, report: Callable[[], str]) -> None:
        self._reports.append(report)

    def service(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                cwd: pathlib.Path | None = None) -> Service:
        svc = Service(name, argv, self.root / "logs" / f"{name}.log", env, cwd)
        self.on_close(name, svc.stop)
        self.describe_with(svc.report)
        return svc

    def report(self) -> str:
        parts = []
        for report in self._reports:
            try:
                parts.append(report())
            except Exception as error:
                parts.append(f"(report failed: {error})")
        return "\n".join(parts)

    def close(self) -> list[str]:
        """Stops everything; returns the errors met (never raises, so one
        failing stop cannot leave the others running)."""
        errors = []
        while self._closers:
            name, closer = self._closers.pop()
            try:
                closer()
            except Exception as error:
                errors.append(f"stopping {name}: {error}")
        return errors


# --------------------------------------------------------------------------
# PostgreSQL


def postgres_bin_dir() -> pathlib.Path:
    versions = sorted(pathlib.Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name))
    return versions[-1] / "bin"


class PostgresCluster:
    """A throwaway cluster the drill owns: trust authentication on loopback, a
    free port, data in a temporary directory; it can be stopped, started,
    frozen (SIGSTOP to the postmaster and every backend) and thawed."""

    def __init__(self, pod: Pod):
        self.pod = pod
        self.dir = shared_temp_dir("todo-drill-pg-")
        self.data = self.dir / "data"
        self.port = free_port()
        self.bin = postgres_bin_dir()
        self.frozen: list[int] = []
        pod.on_close("postgres", self.close)
        pod.describe_with(lambda: f"--- postgres on port {self.port}, last lines of its log:\n"
                                  f"{tail(self.dir / 'server.log')}")

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if IS_ROOT else []
        return subprocess.run(prefix + list(argv), capture_output=True, text=True, timeout=120)

    def init(self) -> "PostgresCluster":
        if IS_ROOT:
            shutil.chown(self.dir, "postgres", "postgres")
        done = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                         "--auth=trust", "--no-sync", "-E", "UTF8")
        assert done.returncode == 0, f"initdb failed: {done.stderr}"
        return self.start()

    def start(self) -> "PostgresCluster":
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c max_connections=200")
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                         str(self.dir / "server.log"), "-w", "-t", "60", "-o", options, "start")
        assert done.returncode == 0, f"pg_ctl start failed: {done.stderr}\n{tail(self.dir / 'server.log')}"
        return self

    def stop(self, mode: str = "fast") -> None:
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                         "-t", "60", "stop")
        assert done.returncode == 0, f"pg_ctl stop failed: {done.stderr}"

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def processes(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        postmaster = self.postmaster_pid()
        pids = [postmaster]
        for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == postmaster:
                pids.append(int(stat.parent.name))
        return pids

    def freeze(self) -> None:
        """SIGSTOP to the postmaster first (so it starts no new backend), then
        to every child: connections stay open, nothing answers."""
        self.frozen = self.processes()
        for pid in self.frozen:
            os.kill(pid, signal.SIGSTOP)
        # A backend forked between the listing and the stop is caught here.
        for pid in self.processes():
            if pid not in self.frozen:
                os.kill(pid, signal.SIGSTOP)
                self.frozen.append(pid)

    def thaw(self) -> None:
        for pid in self.frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen = []

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(["psql", self.url(database), "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"psql failed on {sql!r}: {done.stderr}"
        return done.stdout.strip()

    def create_database(self, name: str | None = None) -> str:
        name = name or f"todo_drill_{uuid.uuid4().hex[:10]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def close(self) -> None:
        self.thaw()
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                      "-t", "30", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# TLS


@dataclass
class Certificate:
    cert_path: pathlib.Path
    key_path: pathlib.Path


def self_signed_certificate(directory: pathlib.Path) -> Certificate:
    """A certificate for 127.0.0.1 and localhost, and its key (PKCS#8 PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "todo-drill")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    certificate = Certificate(directory / "cert.pem", directory / "key.pem")
    certificate.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certificate.key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return certificate


# --------------------------------------------------------------------------
# Small HTTP servers the drill runs


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # the drill reports what it saw itself
        pass

    def read_body(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def answer(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    """Keeps its open connections, so that taking the receiver down also cuts
    the keep-alive connections clients hold (else an "outage" would still
    serve them)."""

    def __init__(self, *args, **kwargs):
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.connections_lock:
            connections, self.connections = list(self.connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        # A client that went away mid-answer (a sidecar killed in a drill) is
        # expected; anything else is printed as usual.
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class HttpReceiver:
    """A threaded HTTP server on a fixed loopback port that can be taken down
    (connections refused) and brought back on the same port."""

    def __init__(self, pod: Pod, name: str, handler: type[_QuietHandler]):
        self.name = name
        self.port = free_port()
        self.handler = type(f"{name}Handler", (handler,), {"receiver": self})
        self.server: http.server.ThreadingHTTPServer | None = None
        self.lock = threading.Lock()
        pod.on_close(name, self.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HttpReceiver":
        server = _Server(("127.0.0.1", self.port), self.handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name=self.name, daemon=True).start()
        self.server = server
        return self

    def stop(self) -> None:
        """Refuses new connections and cuts the open ones."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server.cut_connections()
            self.server = None


@dataclass
class LogEntry:
    sink: str
    line: str
    labels: dict = field(default_factory=dict)

    @property
    def record(self) -> dict | None:
        try:
            value = json.loads(self.line)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class _LogHandler(_QuietHandler):
    receiver: "LogReceiver"

    def do_POST(self) -> None:
        if self.path == "/loki/api/v1/push":
            self.loki_push()
        elif self.path == "/_bulk":
            self.bulk()
        else:
            self.answer(404, b'{"error":"unknown path"}')

    def loki_push(self) -> None:
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            # Loki also takes snappy-compressed protobuf; the sidecar sends
            # JSON (docs/logship.md), so anything else is a change to notice.
            self.answer(415, b'{"error":"this receiver takes JSON pushes only"}')
            return
        push = json.loads(self.read_body())
        with self.receiver.lock:
            self.receiver.pushes_in_flight += 1
        try:
            # A slow receiver keeps a batch in flight long enough to crash
            # the sidecar in the middle of it.
            time.sleep(self.receiver.delay_seconds)
        finally:
            with self.receiver.lock:
                self.receiver.pushes_in_flight -= 1
        entries = [LogEntry("loki", value[1], stream.get("stream", {}))
                   for stream in push["streams"] for value in stream["values"]]
        self.receiver.record(entries)
        self.answer(204)

    def bulk(self) -> None:
        lines = [line for line in self.read_body().split(b"\n") if line.strip()]
        items, entries = [], []
        for action_line, document_line in zip(lines[0::2], lines[1::2]):
            action = json.loads(action_line)["create"]
            document = json.loads(document_line)
            with self.receiver.lock:
                seen = action.get("_id") in self.receiver.es_ids
                self.receiver.es_ids.add(action.get("_id"))
            if seen:  # as Elasticsearch: a document created twice is a 409
                items.append({"create": {"_index": action["_index"], "_id": action["_id"], "status": 409}})
                continue
            document.pop("@timestamp", None)
            entries.append(LogEntry("elasticsearch", json.dumps(document), {"_index": action["_index"]}))
            items.append({"create": {"_index": action["_index"], "_id": action["_id"], "status": 201}})
        self.receiver.record(entries)
        self.answer(200, json.dumps({"took": 1, "errors": False, "items": items}).encode())


class LogReceiver(HttpReceiver):
    """Loki-format (`POST /loki/api/v1/push`, JSON) and Elasticsearch-format
    (`POST /_bulk`) receiver recording every line it accepted."""

    def __init__(self, pod: Pod, name: str = "log-receiver"):
        super().__init__(pod, name, _LogHandler)
        self.entries: list[LogEntry] = []
        self.es_ids: set[str] = set()
        self.delay_seconds = 0.0
        self.pushes_in_flight = 0

    def record(self, entries: list[LogEntry]) -> None:
        with self.lock:
            self.entries.extend(entries)

    def missing(self, expected: Iterable[str], sink: str = "loki") -> set[str]:
        """The request ids in `expected` whose line has not arrived."""
        return set(expected) - set(self.request_ids(sink))

    def line_bytes(self, request_ids: set[str], sink: str = "loki") -> int:
        """Bytes (with their newlines) of the first line received for each
        of `request_ids`."""
        with self.lock:
            entries = list(self.entries)
        total, seen = 0, set()
        for entry in entries:
            record = entry.record
            request_id = record.get("request_id") if record else None
            if entry.sink == sink and request_id in request_ids and request_id not in seen:
                seen.add(request_id)
                total += len(entry.line.encode()) + 1
        return total

    def request_ids(self, sink: str = "loki") -> list[str]:
        """The `request_id` of every `request completed` line received by
        `sink`, duplicates included."""
        with self.lock:
            entries = list(self.entries)
        ids = []
        for entry in entries:
            record = entry.record
            # The bunyan layer writes an event inside the request span as
            # "[HTTP REQUEST - EVENT] request completed".
            if entry.sink == sink and record and str(record.get("msg", "")).endswith("request completed"):
                ids.append(record.get("request_id"))
        return ids


class _WebhookHandler(_QuietHandler):
    receiver: "WebhookReceiver"

    def do_POST(self) -> None:
        payload = json.loads(self.read_body())
        self.receiver.record(self.path, payload)
        self.answer(200, b"{}")


@dataclass
class Notification:
    at: float  # time.monotonic() when received
    path: str
    payload: dict


class WebhookReceiver(HttpReceiver):
    """Records Alertmanager's webhook notifications (any path)."""

    def __init__(self, pod: Pod):
        super().__init__(pod, "webhook", _WebhookHandler)
        self.notifications: list[Notification] = []

    def record(self, path: str, payload: dict) -> None:
        with self.lock:
            self.notifications.append(Notification(time.monotonic(), path, payload))

    def alerts(self, alertname: str, status: str | None = None) -> list[tuple[Notification, dict]]:
        with self.lock:
            notifications = list(self.notifications)
        found = []
        for notification in notifications:
            for alert in notification.payload.get("alerts", []):
                if alert["labels"].get("alertname") == alertname and (status is None or alert["status"] == status):
                    found.append((notification, alert))
        return found

    def alertnames(self, status: str = "firing") -> set[str]:
        with self.lock:
            notifications = list(self.notifications)
        return {alert["labels"].get("alertname") for n in notifications
                for alert in n.payload.get("alerts", []) if alert["status"] == status}


# --------------------------------------------------------------------------
# The pod's two programs


@dataclass
class AppOptions:
    """Settings a drill gives todo-app beyond the harness's own."""
    env: dict[str, str] = field(default_factory=dict)


class TodoApp:
    """`todo-app serve` with TLS on, its log file where the sidecar tails it."""

    def __init__(self, pod: Pod, binaries: pathlib.Path, repo_root: pathlib.Path,
                 certificate: Certificate, database_url: str, name: str = "todo-app",
                 env: dict[str, str] | None = None):
        self.binaries = binaries
        self.database_url = database_url
        self.certificate = certificate
        self.port = free_port()
        self.admin_port = free_port()
        self.log_dir = pod.root / name / "logs"
        self.log_file = self.log_dir / "app.log"
        environment = {
            "APP_CONFIG_DIR": str(repo_root / "configuration"),
            "DATABASE_URL": database_url,
            "APP__SERVER__PORT": str(self.port),
            "APP__SERVER__WORKERS": "2",
            "APP__ADMIN__PORT": str(self.admin_port),
            "APP__TLS__CERT_PATH": str(certificate.cert_path),
            "APP__TLS__KEY_PATH": str(certificate.key_path),
            "APP__LOG__FILE": str(self.log_file),
            "RUST_LOG": "info",
        }
        environment.update(env or {})
        self.env = environment
        self.service = pod.service(name, [str(binaries / "todo-app"), "serve"], environment, repo_root)

    @property
    def api(self) -> str:
        return f"https://127.0.0.1:{self.port}/api"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, wait: bool = True) -> "TodoApp":
        self.service.start()
        if wait:
            self.wait_ready()
        return self

    def ready_status(self) -> int:
        return requests.get(f"{self.admin}/health/ready", timeout=2).status_code

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(f"{self.service.name} ready", lambda: self.service.running() and self.ready_status() == 200,
                   timeout, seen=self.service.report)

    def session(self, token: str | None) -> requests.Session:
        session = requests.Session()
        # Without this, REQUESTS_CA_BUNDLE in the environment would override
        # `verify` (a known requests quirk), and proxies could apply.
        session.trust_env = False
        session.verify = str(self.certificate.cert_path)
        if token is not None:
            session.headers["Authorization"] = f"Bearer {token}"
        return session

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binaries / "todo-app"), *args], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "DATABASE_URL": self.database_url,
                                                          "APP_CONFIG_DIR": self.env["APP_CONFIG_DIR"]})

    def create_key(self, owner: str) -> str:
        done = self.cli("keys", "create", "--owner", owner)
        assert done.returncode == 0, f"keys create failed: {done.stderr}"
        return done.stdout.strip()


class Sidecar:
    """`todo-sidecar run` beside one app: backups to a local store, log
    shipping of the app's log file, aggregation of the app's metrics."""

    def __init__(self, pod: Pod, binaries: pathlib.Path, app: TodoApp, database_url: str,
                 loki_url: str | None = None, elasticsearch_url: str | None = None,
                 store: pathlib.Path | None = None, name: str = "todo-sidecar",
                 env: dict[str, str] | None = None):
        self.binaries = binaries
        self.app = app
        self.admin_port = free_port()
        state = pod.root / name
        self.store = store or state / "backups"
        self.checkpoint = app.log_dir / ".logship-checkpoint.json"
        environment = {
            "DATABASE_URL": database_url,
            "SIDECAR__ADMIN__HOST": "127.0.0.1",
            "SIDECAR__ADMIN__PORT": str(self.admin_port),
            "SIDECAR__BACKUP__STORE__PATH": str(self.store),
            "SIDECAR__BACKUP__REFRESH_INTERVAL_SECONDS": "1",
            "SIDECAR__AGGREGATE__APP_METRICS_URL": f"{app.admin}/metrics",
            # Prometheus scrapes every second in the drills.
            "SIDECAR__AGGREGATE__CACHE_TTL_MS": "500",
            "SIDECAR__LOGSHIP__PATHS": str(app.log_file),
            "SIDECAR__LOGSHIP__CHECKPOINT_PATH": str(self.checkpoint),
            "SIDECAR__LOGSHIP__DEAD_LETTER__PATH": str(state / "dead-letter.ndjson"),
            "SIDECAR__LOGSHIP__BATCH__TIMEOUT_MS": "200",
            # A receiver that comes back is used within a second or two.
            "SIDECAR__LOGSHIP__RETRY__MAX_BACKOFF_MS": "1000",
            "SIDECAR__LOGSHIP__RETRY__REQUEST_TIMEOUT_MS": "3000",
            "RUST_LOG": "info",
        }
        if loki_url:
            environment["SIDECAR__LOGSHIP__SINKS__LOKI__URL"] = loki_url
        if elasticsearch_url:
            environment["SIDECAR__LOGSHIP__SINKS__ELASTICSEARCH__URL"] = elasticsearch_url
        environment.update(env or {})
        self.env = environment
        self.name = name
        self.pod = pod
        self.service = pod.service(name, [str(binaries / "todo-sidecar"), "run"], environment)

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def start(self, wait: bool = True) -> "Sidecar":
        self.service.start()
        if wait:
            wait_until(f"{self.name} ready", lambda: self.service.running() and requests.get(
                f"{self.admin}/health/ready", timeout=2).status_code == 200, 60, seen=self.service.report)
        return self

    def restart(self, env: dict[str, str] | None = None, unset: Iterable[str] = ()) -> "Sidecar":
        """A new process with the same settings plus `env`, without the
        variables in `unset` (a container restart, or a rollout of new
        settings). Stop the old one first."""
        self.env = {key: value for key, value in {**self.env, **(env or {})}.items() if key not in set(unset)}
        self.service = self.pod.service(f"{self.name}-{uuid.uuid4().hex[:4]}",
                                        self.service.argv, self.env)
        return self.start()

    def metric(self, name: str) -> float | None:
        """The sum of every sample of `name` on the sidecar's /metrics."""
        text = requests.get(f"{self.admin}/metrics", timeout=5).text
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{")]
        return sum(values) if values else None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binaries / "todo-sidecar"), *args], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **self.env})

    def cli_service(self, name: str, *args: str) -> Service:
        """A `todo-sidecar` command run as a background process (to kill it)."""
        return self.pod.service(name, [str(self.binaries / "todo-sidecar"), *args], self.env)


# --------------------------------------------------------------------------
# Load


@dataclass
class Outcome:
    request_id: str
    status: int | None  # None: no answer (connection error, timeout)
    seconds: float
    error: str = ""
    started: float = 0.0


class Load:
    """A bounded load generator: `workers` threads, each with its own
    keep-alive session, sending `request(session, request_id)` until stopped
    or `max_requests` were sent. Every request carries a fresh X-Request-Id,
    so its log line can be matched."""

    def __init__(self, make_session: Callable[[], requests.Session],
                 request: Callable[[requests.Session, str], requests.Response],
                 workers: int = 4, max_requests: int = 100_000, timeout: float = 20,
                 pause: float = 0.0):
        self.make_session = make_session
        self.request = request
        self.workers = workers
        self.max_requests = max_requests
        self.timeout = timeout
        self.pause = pause
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sent = 0

    def _take(self) -> bool:
        with self.lock:
            if self.sent >= self.max_requests or self.stopping.is_set():
                return False
            self.sent += 1
            return True

    def _work(self) -> None:
        session = self.make_session()
        while self._take():
            request_id = f"drill-{uuid.uuid4().hex}"
            started = time.monotonic()
            try:
                response = self.request(session, request_id)
                outcome = Outcome(request_id, response.status_code, time.monotonic() - started,
                                  started=started)
            except requests.RequestException as error:
                outcome = Outcome(request_id, None, time.monotonic() - started, str(error), started)
                session = self.make_session()
            with self.lock:
                self.outcomes.append(outcome)
            if self.pause:
                self.stopping.wait(self.pause)

    def start(self) -> "Load":
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"load-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self, timeout: float = 60) -> list[Outcome]:
        self.stopping.set()
        return self.join(timeout)

    def join(self, timeout: float = 120) -> list[Outcome]:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise DrillTimeout(f"load generator thread {thread.name} still busy after {timeout} s")
        with self.lock:
            return list(self.outcomes)


def create_todo(session: requests.Session, api: str, request_id: str, title: str = "drill") -> requests.Response:
    return session.post(f"{api}/todos", json={"title": title}, timeout=20,
                        headers={"X-Request-Id": request_id})


def run_parallel(calls: Iterable[Callable[[], object]]) -> list[object]:
    """Runs the calls at the same moment (threads), returns their results in order."""
    calls = list(calls)
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def read_only(pod: Pod, directory: pathlib.Path) -> Callable[[], None]:
    """Makes `directory` read-only for everyone, root included (a read-only
    bind mount over itself, as a failed volume looks); returns the undo,
    which the pod also runs at the end."""
    def run(*argv: str) -> None:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{' '.join(argv)} failed (the drill needs mount rights): {done.stderr}"

    run("mount", "--bind", str(directory), str(directory))
    mounted = [True]

    def undo() -> None:
        if mounted[0]:
            run("umount", str(directory))
            mounted[0] = False

    pod.on_close(f"read-only mount of {directory}", undo)
    run("mount", "-o", "remount,ro,bind", str(directory))
    return undo


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------
# A whole pod


@dataclass
class Stack:
    """One pod's worth of processes around a database of its own."""
    pod: Pod
    postgres: PostgresCluster
    database_url: str
    app: TodoApp
    sidecar: Sidecar | None
    logs: LogReceiver


def start_stack(pod: Pod, binaries: pathlib.Path, repo_root: pathlib.Path, certificate: Certificate,
                app_env: dict[str, str] | None = None, sidecar_env: dict[str, str] | None = None,
                with_sidecar: bool = True) -> Stack:
    """PostgreSQL (a cluster of the drill's own), todo-app with TLS and a log
    file, the Loki-format receiver, and `todo-sidecar run` shipping to it."""
    postgres = PostgresCluster(pod).init()
    database_url = postgres.url(postgres.create_database())
    logs = LogReceiver(pod).start()
    app = TodoApp(pod, binaries, repo_root, certificate, database_url, env=app_env).start()
    sidecar = None
    if with_sidecar:
        sidecar = Sidecar(pod, binaries, app, database_url, loki_url=logs.url, env=sidecar_env).start()
    return Stack(pod, postgres, database_url, app, sidecar, logs)


# --------------------------------------------------------------------------
# Prometheus and Alertmanager

# How much shorter than in production the drills make every `for:`, range
# window and Alertmanager timing: 5m becomes 15 s. The rules get it through
# the chart's `alerting.timeScale` value (tests/monitoring/render_rules.py).
TIME_SCALE = 0.05

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration ("1h30m", "500ms")."""
    import re
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


# The drills run debug builds on a shared 2-core machine, where a request
# can take longer than the latency objective's 250 ms without anything being
# wrong: the latency SLO's threshold is raised to the largest bucket bound
# but one, so that its burn-rate alerts stay quiet unless requests hang.
DRILL_LATENCY_THRESHOLD = "5"


def deep_merge(base: dict, override: dict) -> dict:
    """`override` over `base`, maps merged key by key (as Helm merges values)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render_rules(values: dict, out_path: pathlib.Path) -> pathlib.Path:
    """The shipped alert rules (alerts/), rendered through the chart with
    `values` — the one templating mechanism, never a copy of the rules —
    as a release named after the drill's scrape job in its namespace, so the
    rules' release labels (the todo:slo_* and todo:threshold_* constants the
    dashboards join `on (namespace, job)`) are those of the scraped pods, as
    a ServiceMonitor's job is the chart's Service name in a cluster."""
    import importlib
    import sys
    tests = pathlib.Path(__file__).resolve().parents[1]
    # render_rules.py lives in tests/monitoring and imports tests/suite_support.py.
    for folder in (tests, tests / "monitoring"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    return importlib.import_module("render_rules").render_rule_file(
        values, out_path, name=Prometheus.JOB, namespace=Prometheus.NAMESPACE)


def drill_alertmanager_config(example: dict, webhook_url: str, time_scale: float) -> dict:
    """alerts/alertmanager.example.yaml as the drill runs it: its routes and
    inhibitions unchanged, every receiver replaced by a webhook to the
    drill's recorder at `<webhook_url>/<receiver name>` (so the drill sees
    which route a notification took), timings scaled by `time_scale`."""
    import copy
    config = copy.deepcopy(example)
    config.setdefault("global", {})
    config["global"] = {key: value for key, value in config["global"].items()
                        if key == "resolve_timeout"}
    config["receivers"] = [{"name": receiver["name"], "webhook_configs": [
        {"url": f"{webhook_url}/{receiver['name']}", "send_resolved": True}]}
        for receiver in config.get("receivers", [])]
    config.pop("templates", None)

    def scale(route: dict) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = f"{max(1, round(parse_duration(route[key]) * time_scale))}s"
        for child in route.get("routes", []):
            scale(child)

    scale(config.get("route", {}))
    return config


class Alertmanager:
    """A real Alertmanager on a free port, clustering off, routing with the
    drill's configuration to the webhook receiver."""

    def __init__(self, pod: Pod, config: dict):
        import yaml
        self.port = free_port()
        directory = pod.root / "alertmanager"
        directory.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = directory / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.service = pod.service("alertmanager", [
            shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or "alertmanager",
            f"--config.file={self.config_path}", f"--storage.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
            "--log.level=warn"])
        pod.describe_with(self.report)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Alertmanager":
        self.service.start()
        wait_until("Alertmanager ready", lambda: requests.get(f"{self.url}/-/ready", timeout=2).ok, 30,
                   seen=self.service.report)
        return self

    def alerts(self) -> list[dict]:
        return requests.get(f"{self.url}/api/v2/alerts", timeout=5).json()

    def describe(self, alertname: str | None = None) -> str:
        try:
            alerts = [a for a in self.alerts() if alertname is None or a["labels"].get("alertname") == alertname]
        except requests.RequestException as error:
            return f"Alertmanager: no answer ({error})"
        if not alerts:
            return f"Alertmanager: no {alertname or ''} alert"
        return "Alertmanager: " + "; ".join(
            f"{a['labels'].get('alertname')} {a['status']['state']}"
            f"{' inhibited by ' + ','.join(a['status']['inhibitedBy']) if a['status'].get('inhibitedBy') else ''}"
            for a in alerts)

    def report(self) -> str:
        return self.describe()


class Prometheus:
    """A real Prometheus on a free port: scrapes the pods' metrics endpoints
    every second with the labels the chart's ServiceMonitor gives them
    (`namespace`, `pod`, `job`, `instance`), evaluates the rendered rules
    every second and sends alerts to the drill's Alertmanager."""

    NAMESPACE = "drill"
    JOB = "todo-backend"

    def __init__(self, pod: Pod, targets: dict[str, str], rule_file: pathlib.Path | None = None,
                 alertmanager: Alertmanager | None = None):
        """`targets`: pod name → host:port of its metrics endpoint."""
        import yaml
        self.port = free_port()
        directory = pod.root / "prometheus"
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{
                "job_name": self.JOB,
                "static_configs": [{"targets": [target], "labels": {"namespace": self.NAMESPACE, "pod": name}}
                                   for name, target in targets.items()],
            }],
        }
        if rule_file is not None:
            config["rule_files"] = [str(rule_file)]
        if alertmanager is not None:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]}
        self.config_path = directory / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.targets = targets
        self.service = pod.service("prometheus", [
            "prometheus", f"--config.file={self.config_path}", f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
            # Alerts still firing are sent again this often; resolved ones at once.
            "--rules.alert.resend-delay=1s"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Prometheus":
        """Starts it and waits for the first successful scrape of every
        target (Prometheus scrapes nothing for its first few seconds)."""
        self.service.start()
        wait_until("Prometheus ready", lambda: requests.get(f"{self.url}/-/ready", timeout=2).ok, 30,
                   seen=self.service.report)
        wait_until("Prometheus has scraped every pod", lambda: self.value(
            f'count(up{{job="{self.JOB}"}} == 1)') == len(self.targets), 30,
            seen=lambda: str(requests.get(f"{self.url}/api/v1/targets", timeout=5).json()))
        return self

    def query(self, expr: str) -> list[dict]:
        """The instant vector of `expr` now; AssertionError on a query error."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", f"Prometheus refused {expr!r}: {answer.get('error')}"
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def rule(self, alertname: str) -> dict:
        groups = requests.get(f"{self.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        for group in groups:
            for rule in group["rules"]:
                if rule.get("name") == alertname and rule.get("type") == "alerting":
                    return rule
        raise AssertionError(f"Prometheus has no alerting rule {alertname}")

    def describe(self, alertname: str) -> str:
        """The alert's state and its expression's current value, for a
        failing drill's message."""
        try:
            rule = self.rule(alertname)
            try:
                value = [(s["metric"], s["value"][1]) for s in self.query(rule["query"])]
            except AssertionError as error:
                value = str(error)
            states = [a["state"] for a in rule.get("alerts", [])]
            return (f"Prometheus: {alertname} is {rule['state']} (alerts: {states or 'none'}); "
                    f"health {rule.get('health')} {rule.get('lastError', '')}; "
                    f"expression now: {value or 'empty'}\n  {rule['query']}")
        except Exception as error:
            return f"Prometheus: could not read {alertname}: {error}"


# Receiver integrations that wake someone up: a notification routed to a
# receiver holding one of these is a page.
PAGING_INTEGRATIONS = ("pagerduty_configs", "opsgenie_configs", "victorops_configs")


@dataclass
class Monitoring:
    """Prometheus and Alertmanager over a set of pods, with the webhook
    receiver that plays the pager."""
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: WebhookReceiver
    time_scale: float
    example: dict = field(default_factory=dict)

    @property
    def pager_receivers(self) -> set[str]:
        """The receivers of the shipped Alertmanager configuration that page."""
        return {receiver["name"] for receiver in self.example.get("receivers", [])
                if any(receiver.get(kind) for kind in PAGING_INTEGRATIONS)}

    def paged(self, notification: Notification) -> bool:
        return notification.path.strip("/") in self.pager_receivers

    def describe(self, alertname: str) -> str:
        return f"{self.prometheus.describe(alertname)}\n{self.alertmanager.describe(alertname)}"

    def wait_for_notification(self, alertname: str, status: str, timeout: float,
                              since: float = 0.0) -> Notification:
        """The first notification received after `since` (a time.monotonic())
        in which `alertname` is firing (`status` "firing": one of its alerts,
        e.g. one of several burn-rate windows), or resolved ("resolved":
        every alert of that name in the notification)."""
        def matches(notification: Notification) -> bool:
            alerts = [a for a in notification.payload.get("alerts", [])
                      if a["labels"].get("alertname") == alertname]
            if status == "firing":
                return any(a["status"] == "firing" for a in alerts)
            return bool(alerts) and all(a["status"] == "resolved" for a in alerts)

        def received():
            with self.webhook.lock:
                found = [n for n in self.webhook.notifications if n.at >= since and matches(n)]
            return found[0] if found else None
        return wait_until(f"{alertname} {status} at the webhook", received, timeout,
                          seen=lambda: self.describe(alertname))

    def firing_now(self) -> set[str]:
        return {alert["labels"]["alertname"] for alert in requests.get(
            f"{self.prometheus.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            if alert["state"] == "firing"}


def start_monitoring(pod: Pod, repo_root: pathlib.Path, targets: dict[str, str],
                     values: dict | None = None, time_scale: float = TIME_SCALE) -> Monitoring:
    """The shipped rules rendered with `values` and the time scale, the
    shipped Alertmanager example routing to the webhook receiver, and
    Prometheus scraping `targets` (pod name → host:port)."""
    import yaml
    webhook = WebhookReceiver(pod).start()
    example = yaml.safe_load((repo_root / "alerts" / "alertmanager.example.yaml").read_text())
    alertmanager = Alertmanager(pod, drill_alertmanager_config(example, webhook.url, time_scale)).start()
    merged = deep_merge({"alerting": {"timeScale": time_scale, "slo": {"latency": {
        "thresholdSeconds": DRILL_LATENCY_THRESHOLD}}}}, values or {})
    (pod.root / "prometheus").mkdir(parents=True, exist_ok=True)
    rule_file = render_rules(merged, pod.root / "prometheus" / "rules.yaml")
    prometheus = Prometheus(pod, targets, rule_file, alertmanager).start()
    monitoring = Monitoring(prometheus, alertmanager, webhook, time_scale, example)
    assert monitoring.pager_receivers, "alerts/alertmanager.example.yaml has no paging receiver"
    pod.describe_with(lambda: f"--- alerts firing in Prometheus: {sorted(monitoring.firing_now())}; "
                              f"notifications received: {[(n.path, a['labels']['alertname'], a['status']) for n in webhook.notifications for a in n.payload.get('alerts', [])]}")
    return monitoring


def rules_shipped(repo_root: pathlib.Path) -> bool:
    """Whether the alert rules and the Alertmanager example are on this
    branch yet (issue 11); the alert checks of the drills need them."""
    return ((repo_root / "alerts" / "alertmanager.example.yaml").exists()
            and (repo_root / "tests" / "monitoring" / "render_rules.py").exists())


# --------------------------------------------------------------------------
# Dashboards


@dataclass
class PanelQuery:
    dashboard: str
    panel: str
    expr: str
    legend: str = ""


def dashboard_queries(dashboards_dir: pathlib.Path) -> list[PanelQuery]:
    """Every Prometheus expression of every panel (rows and collapsed rows
    included) of dashboards/*.json."""
    queries = []

    def walk(dashboard: str, panels: list[dict]) -> None:
        for panel in panels:
            walk(dashboard, panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr") and not target.get("hide"):
                    queries.append(PanelQuery(dashboard, panel.get("title", "?"), target["expr"],
                                              target.get("legendFormat", "")))

    for path in sorted(dashboards_dir.glob("*.json")):
        document = json.loads(path.read_text())
        walk(path.name, document.get("panels", []))
        for row in document.get("rows", []):
            walk(path.name, row.get("panels", []))
    return queries


def dashboard_variables(dashboards_dir: pathlib.Path) -> dict[str, dict]:
    """The templating variables of every dashboard, by name."""
    variables = {}
    for path in sorted(dashboards_dir.glob("*.json")):
        for variable in json.loads(path.read_text()).get("templating", {}).get("list", []):
            variables.setdefault(variable["name"], variable)
    return variables


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable syntaxes ($v, ${v}, ${v:fmt}, [[v]]) replaced by
    `values`, longest names first so $pod never eats $pods."""
    import re
    for name in sorted(values, key=len, reverse=True):
        value = values[name]
        expr = re.sub(r"\$\{" + re.escape(name) + r"(:[^}]*)?\}", lambda m: value, expr)
        expr = expr.replace(f"[[{name}]]", value)
        expr = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", lambda m: value, expr)
    return expr


def grafana_values(prometheus: "Prometheus", variables: dict[str, dict], chosen: dict[str, str]) -> dict[str, str]:
    """A value for every dashboard variable: `chosen` ones as given, the
    built-in intervals sized for a 1 s scrape, the others as Grafana would
    fill them from their `label_values(...)` query against Prometheus."""
    import re
    values = {"__rate_interval": "10s", "__interval": "5s", "__range": "1m", "__range_s": "60",
              "__range_ms": "60000", "__interval_ms": "5000"}
    values.update(chosen)
    for name, variable in variables.items():
        if name in values or variable.get("type") in ("datasource", "constant", "interval"):
            if variable.get("type") == "interval":
                values.setdefault(name, "10s")
            if variable.get("type") == "constant":
                values.setdefault(name, str(variable.get("query", "")))
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else (query or "")
        match = re.match(r"label_values\((?:(.*),\s*)?([A-Za-z_][A-Za-z0-9_]*)\)\s*$", query.strip())
        if match:
            selector, label = match.group(1), match.group(2)
            selector = substitute(selector, values) if selector else f'{{{label}!=""}}'
            found = sorted({s["metric"].get(label) for s in prometheus.query(f"group by ({label}) ({selector})")
                            if s["metric"].get(label)})
            values[name] = found[0] if found else ".*"
        else:
            values[name] = ".*"
    return values
