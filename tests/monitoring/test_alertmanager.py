"""alerts/alertmanager.example.yaml: amtool accepts it, severities reach
the right receivers, and a real Alertmanager running it unchanged holds
back the alerts the inhibition rules name."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from monitoring_support import http_get_json, require_binary


@pytest.fixture(scope="module")
def example(repo_root):
    return repo_root / "alerts" / "alertmanager.example.yaml"


def test_amtool_check_config_accepts_the_example(example):
    amtool = require_binary("amtool")

    result = subprocess.run([amtool, "check-config", str(example)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("labels, receiver", [
    (["alertname=TodoAppDown", "severity=critical", "namespace=prod"], "pager"),
    (["alertname=TodoErrorBudgetBurn", "severity=critical", "long_window=1h", "namespace=prod"], "pager"),
    (["alertname=TodoErrorBudgetBurn", "severity=warning", "long_window=3d", "namespace=prod"], "ticket"),
    (["alertname=TodoBackupFailing", "severity=warning", "namespace=prod"], "ticket"),
    # An alert without a known severity is never dropped: it makes a ticket.
    (["alertname=SomethingElse", "namespace=prod"], "ticket"),
    # kube-prometheus-stack's heartbeat and helper alerts reach no one (this
    # routing replaces the stack's defaults, which did the same).
    (["alertname=Watchdog", "severity=none", "prometheus=monitoring/kube-prometheus-stack-prometheus"], "null"),
    (["alertname=InfoInhibitor", "severity=none", "namespace=kube-system"], "null"),
    # The stack's own alerts of a known severity are routed like ours.
    (["alertname=KubePodCrashLooping", "severity=warning", "namespace=prod"], "ticket"),
])
def test_each_severity_reaches_its_receiver(example, labels, receiver):
    amtool = require_binary("amtool")

    result = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={example}", f"--verify.receivers={receiver}", *labels],
        capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def post_alerts(alertmanager: str, alerts: list[dict]) -> None:
    request = urllib.request.Request(
        f"{alertmanager}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def alert(name: str, severity: str, **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": severity, **labels},
            "annotations": {"summary": f"{name} (test)"}}


def key(labels: dict) -> str:
    """An alert of the tests by name and what tells it from its namesakes: `TodoHighErrorRate/todo-1`."""
    return "/".join([labels["alertname"], *(labels[name] for name in ("pod", "long_window") if name in labels)])


def states(alertmanager: str, namespace: str) -> dict[str, dict]:
    return {key(a["labels"]): a["status"]
            for a in http_get_json(f"{alertmanager}/api/v2/alerts")
            if a["labels"].get("namespace") == namespace}


def wait_for_states(alertmanager: str, namespace: str, expected: dict[str, str], timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    seen = {}
    while time.monotonic() < deadline:
        seen = states(alertmanager, namespace)
        if {name: status["state"] for name, status in seen.items()} == expected:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"expected {expected}, Alertmanager has {seen}")


def test_app_down_inhibits_its_own_pods_error_rate_and_nothing_release_wide(alertmanager):
    post_alerts(alertmanager, [
        alert("TodoAppDown", "critical", namespace="inhibit-a", job="todo", pod="todo-1"),
        alert("TodoHighErrorRate", "critical", namespace="inhibit-a", job="todo", pod="todo-1"),
        # Another pod's errors are not explained by todo-1's app being down...
        alert("TodoHighErrorRate", "critical", namespace="inhibit-a", job="todo", pod="todo-2"),
        # ...nor is the release's SLO burn.
        alert("TodoErrorBudgetBurn", "critical", namespace="inhibit-a", job="todo", long_window="1h"),
        alert("TodoLatencyBudgetBurn", "warning", namespace="inhibit-a", job="todo", long_window="3d"),
        # Not its consequence: still notified.
        alert("TodoBackupFailing", "warning", namespace="inhibit-a", job="todo", pod="todo-1"),
        # Another namespace is another release: not inhibited.
        alert("TodoHighErrorRate", "critical", namespace="inhibit-b", job="todo", pod="todo-1"),
    ])

    seen = wait_for_states(alertmanager, "inhibit-a", {
        "TodoAppDown/todo-1": "active", "TodoHighErrorRate/todo-1": "suppressed",
        "TodoHighErrorRate/todo-2": "active", "TodoErrorBudgetBurn/1h": "active",
        "TodoLatencyBudgetBurn/3d": "active", "TodoBackupFailing/todo-1": "active"})
    assert seen["TodoHighErrorRate/todo-1"]["inhibitedBy"], seen
    wait_for_states(alertmanager, "inhibit-b", {"TodoHighErrorRate/todo-1": "active"})


def test_sidecar_down_inhibits_its_own_pods_app_and_error_alerts(alertmanager):
    post_alerts(alertmanager, [
        alert("TodoSidecarDown", "critical", namespace="inhibit-f", job="todo", pod="todo-1"),
        alert("TodoAppDown", "critical", namespace="inhibit-f", job="todo", pod="todo-1"),
        alert("TodoHighErrorRate", "critical", namespace="inhibit-f", job="todo", pod="todo-1"),
        alert("TodoAppDown", "critical", namespace="inhibit-f", job="todo", pod="todo-2"),
    ])

    wait_for_states(alertmanager, "inhibit-f", {
        "TodoSidecarDown/todo-1": "active", "TodoAppDown/todo-1": "suppressed",
        "TodoHighErrorRate/todo-1": "suppressed", "TodoAppDown/todo-2": "active"})


def test_database_unavailable_inhibits_its_pods_errors_and_the_releases_slo_burn(alertmanager):
    post_alerts(alertmanager, [
        alert("TodoDatabaseUnavailable", "critical", namespace="inhibit-c", job="todo", pod="todo-1",
              cause="app_errors"),
        alert("TodoHighErrorRate", "critical", namespace="inhibit-c", job="todo", pod="todo-1"),
        alert("TodoDatabaseSaturated", "warning", namespace="inhibit-c", job="todo", pod="todo-1", cause="overloaded"),
        # Another pod that still reaches the database: its errors are news.
        alert("TodoHighErrorRate", "critical", namespace="inhibit-c", job="todo", pod="todo-2"),
        # The database is the release's: its SLO burn is the consequence.
        alert("TodoErrorBudgetBurn", "critical", namespace="inhibit-c", job="todo", long_window="6h"),
        # Another release in the same namespace has its own database.
        alert("TodoLatencyBudgetBurn", "critical", namespace="inhibit-c", job="shop", long_window="1h"),
    ])

    wait_for_states(alertmanager, "inhibit-c", {
        "TodoDatabaseUnavailable/todo-1": "active", "TodoHighErrorRate/todo-1": "suppressed",
        "TodoDatabaseSaturated/todo-1": "suppressed", "TodoHighErrorRate/todo-2": "active",
        "TodoErrorBudgetBurn/6h": "suppressed", "TodoLatencyBudgetBurn/1h": "active"})


def test_no_backup_at_all_inhibits_backup_too_old(alertmanager):
    post_alerts(alertmanager, [
        alert("TodoBackupNeverSucceeded", "critical", namespace="inhibit-d", job="todo"),
        alert("TodoBackupTooOld", "critical", namespace="inhibit-d", job="todo"),
    ])

    wait_for_states(alertmanager, "inhibit-d", {
        "TodoBackupNeverSucceeded": "active", "TodoBackupTooOld": "suppressed"})


def test_an_alert_alone_is_not_inhibited(alertmanager):
    post_alerts(alertmanager, [alert("TodoHighErrorRate", "critical", namespace="inhibit-e", pod="todo-1")])

    wait_for_states(alertmanager, "inhibit-e", {"TodoHighErrorRate/todo-1": "active"})
