"""Helpers of the monitoring suite (tests/monitoring): the binaries its
packages.sh installs, starting servers that are stopped whatever happens,
and HTTP. A module of its own, not a conftest: several suites have one."""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent


from suite_support import free_port  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)


def require_binary(name: str) -> str:
    """The path of a binary tests/monitoring/packages.sh installs; fails (never skips) without it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: tests/monitoring/packages.sh installs it (scripts/test.sh sources it)")
    return path


def http_get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def wait_until_ready(url: str, process: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode} before it was ready")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise AssertionError(f"{what} was not ready at {url} within {timeout} s")


@contextlib.contextmanager
def running(command: list[str], ready_url: str, what: str, log_path: pathlib.Path,
            cwd: pathlib.Path | None = None, env: dict[str, str] | None = None):
    """Starts `command`, waits for `ready_url` to answer 200, yields the
    process, and stops it (SIGTERM, then SIGKILL) whatever happens."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    try:
        try:
            wait_until_ready(ready_url, process, what)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log_path.read_text(errors='replace')[-4000:]}") from None
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------
# The PromQL of the dashboards and the rules

REPO_ROOT = HERE.parent.parent

# Grafana's variables, replaced by what Prometheus can parse.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": ".*",
    "$pod": ".*",
}


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target of dashboards/*.json, Grafana's
    variables replaced; `where` names the dashboard, the panel and the target."""
    found = []
    for path in sorted((REPO_ROOT / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        panels = []
        for panel in dashboard["panels"]:
            panels.append(panel)
            panels.extend(panel.get("panels", []))
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                found.append((f"{path.name} / panel {panel['title']!r} / target {target['refId']}", expr))
        for variable in dashboard["templating"]["list"]:
            query = variable.get("query")
            if isinstance(query, dict) and query.get("query", "").startswith("label_values("):
                # label_values(metric{...}, label) is Grafana's; the selector inside is PromQL.
                inner = query["query"][len("label_values("):].rsplit(",", 1)[0]
                for name, value in GRAFANA_VARIABLES.items():
                    inner = inner.replace(name, value)
                found.append((f"{path.name} / variable {variable['name']}", inner))
    return found


def rule_expressions(rule_file: pathlib.Path) -> list[tuple[str, str]]:
    """(where, PromQL) of every rule of a rendered rule file."""
    import yaml

    found = []
    for group in yaml.safe_load(rule_file.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            found.append((f"rule group {group['name']} / {name}", rule["expr"]))
    return found


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "offset", "bool", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (recording rules'
    `level:metric:op` names included), without functions, keywords, label
    names and values, or durations."""
    import re

    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                       # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)                      # range and subquery windows
    text = re.sub(r"\boffset\s+\d+[smhdwy]", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group(0)
        following = text[match.end():].lstrip()
        if following.startswith("(") or name.lower() in _KEYWORDS:
            continue
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue                                            # 1e9, 0.25
        names.add(name)
    return names
