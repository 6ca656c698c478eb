"""Fixtures of the monitoring suite: the chart's rules rendered to a file,
and real Prometheus / Alertmanager servers on free loopback ports, stopped
whatever happens."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from monitoring_support import free_port, require_binary, running  # noqa: E402
from render_rules import render_rule_file  # noqa: E402


@pytest.fixture(scope="session")
def rendered_rules(tmp_path_factory) -> pathlib.Path:
    """The chart's PrometheusRule groups with default values, as a rule file."""
    return render_rule_file({}, tmp_path_factory.mktemp("rules") / "rules.yaml")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    """A real Prometheus on a free loopback port (no scrape targets), for
    its query API: base URL."""
    binary = require_binary("prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    port = free_port()
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    base = f"http://127.0.0.1:{port}"
    with running(command, f"{base}/-/ready", "prometheus", directory / "prometheus.log"):
        yield base


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory, repo_root):
    """A real Alertmanager on free loopback ports running
    alerts/alertmanager.example.yaml unchanged: base URL."""
    binary = require_binary("prometheus-alertmanager")
    directory = tmp_path_factory.mktemp("alertmanager")
    port = free_port()
    command = [
        binary,
        f"--config.file={repo_root / 'alerts' / 'alertmanager.example.yaml'}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--cluster.listen-address=",  # no gossip port: one instance
    ]
    base = f"http://127.0.0.1:{port}"
    with running(command, f"{base}/-/ready", "alertmanager", directory / "alertmanager.log"):
        yield base
