"""Every metric the dashboards and the rules use is exposed by the running
programs: todo-app against a fresh database and `todo-sidecar run` with
backups (a local store), log shipping (stdout, and a Loki sink that is down)
and aggregation on, read on the sidecar's :9001/metrics as Prometheus
scrapes it. A metric renamed in the code fails here."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from monitoring_support import (dashboard_expressions, free_port, metric_names, require_binary,
                                rule_expressions, running)

# Names the dashboards and rules use that our programs do not expose, and who does.
EXTERNAL = {
    "up": "Prometheus, per scrape target",
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_desired_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_max_replicas": "kube-state-metrics",
    "kube_job_failed": "kube-state-metrics",
    "kube_job_owner": "kube-state-metrics",
    "kube_cronjob_status_last_successful_time": "kube-state-metrics",
    "kube_cronjob_status_last_schedule_time": "kube-state-metrics",
    "kube_cronjob_info": "kube-state-metrics",
}


@pytest.fixture(scope="module")
def database_url():
    """A fresh database on the test server (TEST_DATABASE_URL), dropped afterwards."""
    server = os.environ.get("TEST_DATABASE_URL")
    if not server:
        pytest.fail("TEST_DATABASE_URL is not set (scripts/test.sh sets it)")
    require_binary("psql")
    name = f"monitoring_{uuid.uuid4().hex[:12]}"
    subprocess.run(["psql", server, "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'], check=True)
    parsed = urllib.parse.urlsplit(server)
    try:
        yield urllib.parse.urlunsplit(parsed._replace(path=f"/{name}"))
    finally:
        subprocess.run(["psql", server, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=False)


def request(url: str, method: str = "GET", token: str | None = None, body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers),
                                    timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def sample_names(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()
            if line and not line.startswith("#")}


@pytest.fixture(scope="module")
def pod_metrics(binaries, repo_root, database_url, tmp_path_factory):
    """The sidecar's /metrics once the app has served requests and every
    component has reported: its sample names, and the text."""
    directory = tmp_path_factory.mktemp("pod")
    api_port, admin_port, sidecar_port, dead_sink_port = free_port(), free_port(), free_port(), free_port()
    app_env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(api_port),
               "APP__ADMIN__PORT": str(admin_port), "APP__LOG__FILE": str(directory / "logs" / "app.log")}
    sidecar_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SIDECAR__ADMIN__HOST": "127.0.0.1",
        "SIDECAR__ADMIN__PORT": str(sidecar_port),
        "SIDECAR__AGGREGATE__APP_METRICS_URL": f"http://127.0.0.1:{admin_port}/metrics",
        "SIDECAR__AGGREGATE__CACHE_TTL_MS": "0",
        "SIDECAR__BACKUP__STORE__PATH": str(directory / "backups"),
        "SIDECAR__LOGSHIP__PATHS": str(directory / "logs" / "app.log"),
        "SIDECAR__LOGSHIP__CHECKPOINT_PATH": str(directory / "checkpoint.json"),
        "SIDECAR__LOGSHIP__DEAD_LETTER__PATH": str(directory / "dead-letter.ndjson"),
        "SIDECAR__LOGSHIP__SINKS__STDOUT__ENABLED": "true",
        # A Loki that is down: its failures are counted.
        "SIDECAR__LOGSHIP__SINKS__LOKI__URL": f"http://127.0.0.1:{dead_sink_port}",
        "SIDECAR__LOGSHIP__RETRY__MAX_BACKOFF_MS": "500",
    }
    app_command = [str(binaries / "todo-app"), "serve"]
    sidecar_command = [str(binaries / "todo-sidecar"), "run"]
    with running(app_command, f"http://127.0.0.1:{admin_port}/health/ready", "todo-app",
                 directory / "todo-app.log", cwd=repo_root, env=app_env):
        token = subprocess.run([str(binaries / "todo-app"), "keys", "create", "--owner", "monitoring"],
                               cwd=repo_root, env=app_env, capture_output=True, text=True, check=True).stdout.strip()
        api = f"http://127.0.0.1:{api_port}/api/todos"
        assert request(api, "POST", token, {"title": "watched"}) == 201
        assert request(api, token=token) == 200
        assert request(api) == 401
        with running(sidecar_command, f"http://127.0.0.1:{sidecar_port}/health/live", "todo-sidecar",
                     directory / "todo-sidecar.log", env=sidecar_env):
            url = f"http://127.0.0.1:{sidecar_port}/metrics"
            deadline = time.monotonic() + 60
            text = ""
            while time.monotonic() < deadline:
                text = read(url)
                names = sample_names(text)
                if ("todo_app_up 1" in text and "todo_pg_up 1" in text
                        and "todo_logship_failures_total" in names
                        and "todo_logship_batch_duration_seconds_bucket" in names):
                    return names, text
                time.sleep(0.5)
            raise AssertionError(f"the sidecar never reported every component:\n{text}")


def used_names(rendered_rules) -> dict[str, str]:
    """Every metric name used → where first."""
    used = {}
    for where, expr in rule_expressions(rendered_rules) + dashboard_expressions():
        for name in metric_names(expr):
            if ":" not in name:  # recording rules: checked in test_promql.py
                used.setdefault(name, where)
    return used


def test_every_metric_the_dashboards_and_rules_use_is_exposed(pod_metrics, rendered_rules):
    exposed, _ = pod_metrics

    missing = {name: where for name, where in used_names(rendered_rules).items()
               if name not in exposed and name not in EXTERNAL}

    assert not missing, "\n".join(f"{name} (used by {where})" for name, where in sorted(missing.items()))


def test_the_external_names_are_still_used(rendered_rules):
    assert set(EXTERNAL) <= set(used_names(rendered_rules))


def test_a_fresh_pod_exposes_its_known_counters_at_zero(pod_metrics):
    _, text = pod_metrics
    lines = set(text.splitlines())

    for series in [
        'todo_db_errors_total{kind="unavailable"} 0',
        'todo_db_errors_total{kind="overloaded"} 0',
        'todo_auth_failures_total{reason="missing"} 1',
        'todo_auth_failures_total{reason="invalid"} 0',
        # Each program's own telemetry counters, served once per source.
        'todo_trace_spans_dropped_total{reason="export_failed",source="app"} 0',
        'todo_trace_spans_dropped_total{reason="export_failed",source="sidecar"} 0',
        'todo_log_lines_dropped_total{source="sidecar"} 0',
        'todo_app_scrape_failures_total{reason="parse"} 0',
        'todo_logship_checkpoint_errors_total{reason="corrupt"} 0',
        'todo_logship_dead_lettered_total{sink="loki"} 0',
        'todo_logship_dead_lettered_total{sink="stdout"} 0',
        'todo_backup_failures_total 0',
        'todo_remote_write_samples_failed_total 0',
    ]:
        assert series in lines, f"{series} not in\n{text}"


def test_the_latency_thresholds_the_schema_allows_are_buckets_the_app_exposes(pod_metrics, repo_root):
    """The latency SLI counts requests in the bucket `le="<thresholdSeconds>"`:
    a threshold that is not one of todo_http_request_duration_seconds'
    bounds, exactly as the app writes it, would select nothing."""
    import re

    _, text = pod_metrics
    schema = json.loads((repo_root / "helm" / "todo-backend" / "values.schema.json").read_text())
    allowed = schema["properties"]["alerting"]["properties"]["slo"]["properties"]["latency"]["properties"][
        "thresholdSeconds"]["enum"]

    exposed = set(re.findall(r'^todo_http_request_duration_seconds_bucket\{[^}]*le="([^"]+)"', text, flags=re.M))

    assert exposed, "no request duration buckets exposed"
    assert set(allowed) == exposed - {"+Inf"}
