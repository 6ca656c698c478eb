"""The binaries the images ship are built the way the images need them.

todo-app exports traces with reqwest (through todo-common's telemetry); its
TLS (rustls) must come from todo-app's own dependencies (todo-common's
included), not from the sidecar's through the workspace's feature
unification, or `cargo build -p todo-app` (todo-app built alone, as an image
build could) could not reach an https:// collector.

Two levels: `cargo tree` reads the lock file and builds nothing, so its
checks always run; and, with the image suite (TODO_IMAGE_TESTS=1), todo-app
is really built alone (`cargo build -p todo-app`, into a target folder of its
own under /var/cache/todo-backend that later runs reuse) and exports a span
to an HTTPS OTLP/HTTP receiver whose certificate it trusts only through
OTEL_EXPORTER_OTLP_CERTIFICATE."""

import http.server
import json
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import threading
import urllib.request

import pytest

import image_support as support
from suite_support import free_port


def features_of(repo_root, package: str, crate: str) -> set[str]:
    """The features of `crate` when `package` alone is built (normal edges)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is not on PATH (scripts/test.sh makes sure it is)")
    result = subprocess.run(
        [cargo, "tree", "--package", package, "--edges", "features,normal", "--prefix", "none",
         "--offline", "--locked"],
        cwd=repo_root, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    prefix = f'{crate} feature "'
    return {
        line[len(prefix):line.index('"', len(prefix))]
        for line in result.stdout.splitlines()
        if line.startswith(prefix)
    }


def test_todo_app_alone_has_reqwest_with_rustls(repo_root):
    features = features_of(repo_root, "todo-app", "reqwest")

    assert "blocking" in features, features
    assert "__rustls" in features, f"reqwest has no TLS in todo-app alone: {sorted(features)}"


def test_todo_app_alone_has_one_rustls_crypto_provider(repo_root):
    # ring, installed by main; a second (aws-lc-rs) makes rustls panic when
    # it builds a configuration without one named (docs/DEPENDENCIES traps).
    features = features_of(repo_root, "todo-app", "rustls")

    assert "ring" in features, features
    assert "aws_lc_rs" not in features and "aws-lc-rs" not in features, features


# Where todo-app alone is built: outside the clone, like the cargo target of
# the test command, and reused by every later run on the machine (only what
# changed is rebuilt). Never the workspace's own target folder: building one
# package there would rebuild, with other features, what the workspace build
# left, and back again at its next build.
APP_ALONE_TARGET = pathlib.Path(
    os.environ.get("TODO_APP_ALONE_TARGET", "/var/cache/todo-backend/app-alone-target"))


def build_todo_app_alone(repo_root) -> pathlib.Path:
    """`cargo build -p todo-app` (no other package, so only todo-app's own
    features), debug, into APP_ALONE_TARGET; the binary's path."""
    APP_ALONE_TARGET.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [shutil.which("cargo") or "cargo", "build", "--package", "todo-app", "--bin", "todo-app", "--locked"],
        cwd=repo_root, capture_output=True, text=True, timeout=3600, check=False,
        env={**os.environ, "CARGO_TARGET_DIR": str(APP_ALONE_TARGET), "CARGO_INCREMENTAL": "0"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return APP_ALONE_TARGET / "debug" / "todo-app"


def openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: pathlib.Path) -> None:
    """A test CA (ca.pem) and a server certificate it signed for 127.0.0.1
    (server.pem, server.key): rustls refuses a CA certificate used as the
    server's own, so the two are distinct, as in a real deployment."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=todo-backend test CA", cwd=directory)
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
            cwd=directory)
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "1", "-extfile", "server.ext", cwd=directory)


class HttpsOtlpReceiver:
    """An OTLP/HTTP receiver on https://127.0.0.1:<port>, in a thread: keeps
    (path, content type, body) of every POST and answers 200 with an empty
    ExportTraceServiceResponse."""

    def __init__(self, directory: pathlib.Path):
        make_certificates(directory)
        self.ca_file = directory / "ca.pem"
        self.exports: list[tuple[str, str, bytes]] = []
        exports = self.exports

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                exports.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "server.pem", directory / "server.key")
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(os.environ.get("TODO_IMAGE_TESTS") != "1",
                    reason="builds todo-app alone: with the image suite (TODO_IMAGE_TESTS=1)")
def test_todo_app_built_alone_exports_its_spans_to_an_https_collector(repo_root, database, tmp_path):
    url, _ = database
    binary = build_todo_app_alone(repo_root)
    receiver = HttpsOtlpReceiver(tmp_path)
    api_port, admin_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "APP_CONFIG_DIR": str(repo_root / "configuration"),
        "APP__SERVER__HOST": "127.0.0.1",
        "APP__SERVER__PORT": str(api_port),
        "APP__ADMIN__HOST": "127.0.0.1",
        "APP__ADMIN__PORT": str(admin_port),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(receiver.ca_file),
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    server = subprocess.Popen([str(binary), "serve"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        ready, _ = support.wait_for(f"http://127.0.0.1:{admin_port}/health/ready", server)
        assert ready == 200, "todo-app built alone did not become ready"
        token = subprocess.run([str(binary), "keys", "create", "--owner", "alice"], env=env,
                               capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        status = post_todo(f"http://127.0.0.1:{api_port}/api/todos", token)
    finally:
        # SIGTERM: the server shuts down and flushes the spans it holds.
        server.send_signal(signal.SIGTERM)
        try:
            output, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
        receiver.close()

    assert status == 201, output[-4000:]
    assert server.returncode == 0, output[-4000:]
    traces = [(kind, body) for path, kind, body in receiver.exports if path == "/v1/traces"]
    assert traces, f"no span export reached https://127.0.0.1:{receiver.port}\n{output[-4000:]}"
    assert all(kind == "application/x-protobuf" for kind, _ in traces), traces
    # The server span's name, a string field of the protobuf message.
    assert any(b"POST /api/todos" in body for _, body in traces), [body[:200] for _, body in traces]


def post_todo(url: str, token: str) -> int:
    """POSTs one todo with the token; the answer's status."""
    request = urllib.request.Request(
        url, data=json.dumps({"title": "over https"}).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status
