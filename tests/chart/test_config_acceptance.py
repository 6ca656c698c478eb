"""The configuration the chart gives the programs is configuration they
accept: for every values file, each container that runs todo-app or
todo-sidecar gets its rendered ConfigMaps and environment, and the real
program's loader checks them (`check-config`: exit 0, or 2 naming the key).
A chart key the program would refuse at start-up fails here, not in a
cluster. Then the database settings the chart composes (a URL without
credentials, the password through PGPASSWORD) reach a real PostgreSQL."""

from __future__ import annotations

import os
import pathlib
import subprocess
import urllib.parse
import uuid

import pytest
import yaml

from chart_support import (
    VALUES_FILES,
    containers,
    of_kind,
    one,
    pod_spec,
    render_objects,
    values_for,
)

# Stand-ins for what Kubernetes injects from Secrets (never real secrets).
SECRET_STAND_IN = "stand-in-from-a-secret"
PROGRAMS = {"/usr/local/bin/todo-app": "todo-app", "/usr/local/bin/todo-sidecar": "todo-sidecar"}


def program_containers(objects):
    """(workload, container, pod spec) for every container running one of the programs."""
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in containers(spec):
            command = container.get("command") or []
            if command and command[0] in PROGRAMS:
                yield obj, container, spec


def materialize(objects, container, spec, root: pathlib.Path) -> dict[str, str]:
    """Writes the container's ConfigMap mounts under `root` and returns its
    environment with those paths moved there and Secret values stood in for."""
    configmaps = {c["metadata"]["name"]: c for c in of_kind(objects, "ConfigMap")}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    moved = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" not in volume:
            continue
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for key, text in configmaps[volume["configMap"]["name"]]["data"].items():
            (target / key).write_text(text)
        moved[mount["mountPath"]] = str(target)
    env = {}
    for variable in container.get("env", []):
        if "valueFrom" in variable:
            assert "secretKeyRef" in variable["valueFrom"], variable
            env[variable["name"]] = SECRET_STAND_IN
            continue
        value = variable["value"]
        for mount_path, local in moved.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                value = local + value[len(mount_path):]
        env[variable["name"]] = value
    return env


def run_program(binaries: pathlib.Path, program: str, args: list[str], env: dict[str, str]):
    clean = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return subprocess.run(
        [str(binaries / program), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("case", sorted(VALUES_FILES))
def test_every_program_container_accepts_its_rendered_configuration(case, binaries, tmp_path):
    objects = render_objects(values_for(VALUES_FILES[case]))
    checked = set()

    for obj, container, spec in program_containers(objects):
        program = PROGRAMS[container["command"][0]]
        root = tmp_path / f"{obj['kind']}-{obj['metadata']['name']}-{container['name']}"
        env = materialize(objects, container, spec, root)

        result = run_program(binaries, program, ["check-config"], env)

        where = f"{obj['kind']} {obj['metadata']['name']} container {container['name']}"
        assert result.returncode == 0, f"{where}: {program} refused its configuration:\n{result.stderr}"
        assert "the configuration is valid" in result.stderr
        assert SECRET_STAND_IN not in result.stderr, "no secret in the report"
        checked.add((obj["kind"], program))

    assert ("Deployment", "todo-app") in checked and ("Deployment", "todo-sidecar") in checked


# A mistyped key under each program's `config` value: the chart passes it
# through, and the program's own loader must refuse it by name.
MISTYPED_KEYS = {
    "todo-app": ({"app": {"config": {"server": {"shutdown_timeout_secs": 10}}}}, "shutdown_timeout_secs"),
    "todo-sidecar": ({"sidecar": {"config": {"aggregate": {"max_seriez": 10}}}}, "max_seriez"),
}


@pytest.mark.parametrize("program", sorted(MISTYPED_KEYS))
def test_a_key_the_program_refuses_fails_the_check_with_the_key_named(program, binaries, tmp_path):
    values, key = MISTYPED_KEYS[program]
    objects = render_objects(values)
    _, container, spec = next(
        (obj, c, s) for obj, c, s in program_containers(objects)
        if obj["kind"] == "Deployment" and c["name"] == program
    )
    env = materialize(objects, container, spec, tmp_path)

    result = run_program(binaries, program, ["check-config"], env)

    assert result.returncode == 2
    assert key in result.stderr


def test_the_log_destination_reaches_the_app_and_the_sidecar_ships_what_the_app_writes(binaries, tmp_path):
    objects = render_objects(values_for(["values-production.yaml"]))
    app_config = yaml.safe_load(one(objects, "ConfigMap", "todo-todo-backend-app")["data"]["production.yaml"])
    sidecar_config = yaml.safe_load(one(objects, "ConfigMap", "todo-todo-backend-sidecar")["data"]["sidecar.yaml"])

    assert app_config["log"] == {"file": "/var/log/todo/app.log", "stdout": False, "max_bytes": 10485760, "max_files": 3}
    assert sidecar_config["logship"]["paths"] == [app_config["log"]["file"]]
    assert sidecar_config["logship"]["max_rotated_files"] >= app_config["log"]["max_files"]
    assert sidecar_config["logship"]["drain_timeout_seconds"] == values_for(["values-production.yaml"])["sidecar"]["drainTimeoutSeconds"]
    assert sidecar_config["logship"]["sinks"]["loki"]["url"].startswith("http://loki-gateway")


@pytest.fixture()
def test_database():
    """A fresh database on the test PostgreSQL, dropped afterwards; its URL parts."""
    server = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    parsed = urllib.parse.urlsplit(server)
    name = f"chart_{uuid.uuid4().hex[:12]}"
    psql = ["psql", "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1", server]
    subprocess.run([*psql, "--command", f'CREATE DATABASE "{name}"'], check=True, timeout=60)
    try:
        yield {"host": parsed.hostname, "port": parsed.port or 5432, "user": parsed.username or "postgres", "name": name}
    finally:
        subprocess.run([*psql, "--command", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], timeout=60)


def test_the_database_settings_the_chart_composes_reach_postgresql(binaries, tmp_path, test_database):
    # The production shape: user, host, port, name and sslmode in a URL
    # without credentials, the password from a Secret through PGPASSWORD.
    values = values_for(["values-production.yaml"], {
        "database": {**test_database, "sslmode": "disable"},
        "persistence": {"mountPath": str(tmp_path / "backups")},
    })
    objects = render_objects(values)
    migration = one(objects, "Job")
    backup = one(objects, "CronJob", "todo-todo-backend-backup")
    job_container = pod_spec(migration)["containers"][0]
    backup_container = pod_spec(backup)["containers"][0]
    app_env = materialize(objects, job_container, pod_spec(migration), tmp_path / "migration")
    sidecar_env = materialize(objects, backup_container, pod_spec(backup), tmp_path / "backup")
    assert "@" in app_env["DATABASE_URL"] and ":" + SECRET_STAND_IN not in app_env["DATABASE_URL"]
    assert app_env["PGPASSWORD"] == SECRET_STAND_IN

    migrated = run_program(binaries, "todo-app", ["migrate"], app_env)
    backed_up = run_program(binaries, "todo-sidecar", ["backup", "run"], sidecar_env)

    assert migrated.returncode == 0, migrated.stderr
    assert backed_up.returncode == 0, backed_up.stderr
    assert "published" in backed_up.stderr
    assert SECRET_STAND_IN not in migrated.stderr + backed_up.stderr
