"""The two images, built from the real Dockerfile and run: they build, run as
uid 1000, `todo-app serve` answers its readiness probe against the test
PostgreSQL, and the sidecar takes a backup with the image's own pg_dump that
`backup verify --restore-drill` accepts.

Nothing can be pulled here, so the bookworm base image is made locally with
mmdebstrap (cached in /var/cache/todo-backend/images) and the build stage is
replaced by the binaries built on the host (`--build-context binaries=DIR`). The builds
install Debian packages, so these tests need the Debian mirror and root; they
run when TODO_IMAGE_TESTS=1 (.ci/run sets it)."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile

import pytest

import image_support as support
from suite_support import free_port

pytestmark = pytest.mark.skipif(
    os.environ.get("TODO_IMAGE_TESTS") != "1",
    reason="image tests run with TODO_IMAGE_TESTS=1 (they need root, buildah and the Debian mirror)",
)

APP_IMAGE = "localhost/todo-app:image-test"
SIDECAR_IMAGE = "localhost/todo-sidecar:image-test"
VERSION = "0.0.0-image-test"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def images(repo_root, binaries):
    """Both images, built with the host's binaries; removed afterwards with
    every intermediate image the builds left."""
    missing = support.available()
    if missing:
        pytest.fail(missing)
    images_before, containers_before = support.image_ids(), support.container_ids()
    with support.debian_base_image(), tempfile.TemporaryDirectory() as prebuilt:
        # Just the two binaries (the debug folder holds gigabytes of others).
        for name in ("todo-app", "todo-sidecar"):
            shutil.copy2(binaries / name, pathlib.Path(prebuilt) / name)
        built = []
        try:
            for target, tag in (("todo-app", APP_IMAGE), ("todo-sidecar", SIDECAR_IMAGE)):
                support.build_image(
                    repo_root, pathlib.Path(prebuilt), target, tag,
                    {"VERSION": VERSION, "REVISION": REVISION,
                     "SOURCE": "https://github.com/todo-backend/todo-backend"},
                )
                built.append(tag)
            yield {"app": APP_IMAGE, "sidecar": SIDECAR_IMAGE}
        finally:
            for tag in built:
                support.buildah("rmi", tag, check=False)
            for leftover in support.container_ids() - containers_before:
                support.buildah("rm", leftover, check=False)
            for leftover in support.image_ids() - images_before:
                support.buildah("rmi", "--force", leftover, check=False)


@pytest.mark.parametrize(("image", "binary"), [("app", "todo-app"), ("sidecar", "todo-sidecar")])
def test_each_image_runs_as_1000_from_its_binary_with_the_oci_labels(images, image, binary):
    inspection = support.image_inspection(images[image])
    config = inspection["OCIv1"]["config"]

    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == [f"/usr/local/bin/{binary}"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == REVISION
    assert labels["org.opencontainers.image.source"] == "https://github.com/todo-backend/todo-backend"
    assert not inspection["Docker"]["config"].get("Healthcheck"), "no HEALTHCHECK: Kubernetes probes"


@pytest.mark.parametrize(("image", "binary"), [("app", "todo-app"), ("sidecar", "todo-sidecar")])
def test_version_runs_as_uid_1000(images, image, binary):
    with support.container(images[image]) as ctr:
        version = support.run(ctr, [binary, "--version"], user="1000")
        # No --user: the image's own USER applies.
        identity = support.run(ctr, ["id", "-u"], user=None)

    assert version.returncode == 0, f"exit {version.returncode}: {version.stdout}{version.stderr}"
    assert version.stdout.strip() == f"{binary} 0.1.0", version.stdout + version.stderr
    assert identity.stdout.strip() == "1000", f"exit {identity.returncode}: {identity.stderr}"


def test_the_sidecar_image_ships_postgresql_15_client_tools_first_on_path(images):
    with support.container(images["sidecar"]) as ctr:
        pg_dump = support.run(ctr, ["pg_dump", "--version"])
        pg_restore = support.run(ctr, ["pg_restore", "--version"])
        # The app image carries no PostgreSQL client programs.
    with support.container(images["app"]) as ctr:
        absent = support.run(ctr, ["pg_dump", "--version"])

    assert pg_dump.stdout.startswith("pg_dump (PostgreSQL) 15."), pg_dump.stdout + pg_dump.stderr
    assert pg_restore.stdout.startswith("pg_restore (PostgreSQL) 15."), pg_restore.stderr
    assert absent.returncode != 0


def test_todo_app_serve_from_the_image_answers_ready_against_postgresql(images, database):
    url, _ = database
    api_port, admin_port = free_port(), free_port()
    with support.container(images["app"]) as ctr:
        command = support.run_args(ctr, ["todo-app", "serve"], env={
            "DATABASE_URL": url,
            "APP__SERVER__HOST": "127.0.0.1",
            "APP__SERVER__PORT": str(api_port),
            "APP__ADMIN__HOST": "127.0.0.1",
            "APP__ADMIN__PORT": str(admin_port),
            "APP__SERVER__SHUTDOWN_READINESS_DELAY_SECONDS": "0",
        })
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
        try:
            status, body = support.wait_for(f"http://127.0.0.1:{admin_port}/health/ready", server)
            api_status, _ = support.get(f"http://127.0.0.1:{api_port}/api/todos")
        finally:
            output = stop(server)

    assert status == 200, f"readiness {status} {body}\n{output}"
    assert api_status == 401, "the API answers (without a key: 401)"
    assert server.returncode == 0, f"exit {server.returncode} on SIGTERM\n{output}"
    assert "shutdown started: readiness now reports 503" in output, output
    assert support.psql(url, "SELECT count(*) FROM __diesel_schema_migrations") != "0", "migrated on start"


def test_the_sidecar_image_backs_up_postgresql_15_with_its_own_pg_dump_and_verifies_it(
        images, database, binaries, repo_root, tmp_path):
    url, major = database
    assert major == 15, f"the sidecar image ships the PostgreSQL 15 client; the test server is {major}"
    subprocess.run([str(binaries / "todo-app"), "migrate"], check=True, capture_output=True,
                   env={**os.environ, "DATABASE_URL": url,
                        "APP_CONFIG_DIR": str(repo_root / "configuration")})
    support.psql(url, "INSERT INTO todos (id, owner, title, description, created_at, updated_at) "
              "SELECT gen_random_uuid(), 'alice', 'todo ' || n, '', now(), now() "
              "FROM generate_series(1, 25) AS n")
    store = tmp_path / "backups"
    store.mkdir()
    os.chown(store, 1000, 1000)
    # info: the "backup started" line names the pg_dump that ran.
    env = {"DATABASE_URL": url, "LOG_LEVEL": "info"}
    # The image's default store path, a volume in the cluster.
    volume = [f"{store}:/var/lib/todo-sidecar/backups"]

    with support.container(images["sidecar"]) as ctr:
        backup = support.run(ctr, ["todo-sidecar", "backup", "run"], env=env, volumes=volume,
                             timeout=180)
        verify = support.run(ctr, ["todo-sidecar", "backup", "verify", "--latest", "--restore-drill"],
                             env=env, volumes=volume, timeout=180)

    assert backup.returncode == 0, backup.stderr
    assert "/usr/lib/postgresql/15/bin/pg_dump" in backup.stderr, "the image's own pg_dump ran"
    manifests = list((store / "snapshots").glob("*.manifest.json"))
    assert len(manifests) == 1, list(store.rglob("*"))
    manifest = json.loads(manifests[0].read_text())
    assert manifest["pg_dump_version"].startswith("15."), manifest
    assert manifest["server_version"].startswith("15."), manifest
    assert manifest["tables"]["public.todos"] == 25, manifest["tables"]
    assert verify.returncode == 0, verify.stderr
    assert (store / "drills" / "last-success.json").exists(), "the restore drill succeeded"


def stop(process: subprocess.Popen) -> str:
    """SIGTERM to todo-app itself (`buildah run` does not pass signals on, as
    the kubelet's runtime does), a kill of the whole group after 30 s;
    returns what it printed."""
    if process.poll() is None:
        for pid in support.descendant_pids(process.pid, "todo-app"):
            os.kill(pid, signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output
