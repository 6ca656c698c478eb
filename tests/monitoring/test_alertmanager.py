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


def states(alertmanager: str, namespace: str) -> dict[str, dict]:
    return {a["labels"]["alertname"]: a["status"]
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


def test_app_down_inhibits_the_app_s_slo_and_error_alerts_in_its_namespace(alertmanager):
    post_alerts(alertmanager, [
        alert("TodoAppDown", "critical", namespace="inhibit-a", pod="todo-1"),
        alert("TodoHighErrorRate", "critical", namespace="inhibit-a", pod="todo-1"),
        alert("TodoErrorBudgetBurn", "critical", namespace="inhibit-a", long_window="1h"),
        alert("TodoLatencyBudgetBurn", "warning", namespace="inhibit-a", long_window="3d"),
        # Not its consequence: still notified.
        alert("TodoBackupFailing", "warning", namespace="inhibit-a", pod="todo-1"),
        # Another namespace is another release: not inhibited.
        alert("TodoHighErrorRate", "critical", namespace="inhibit-b", pod="todo-9"),
    ])

    seen = wait_for_states(alertmanager, "inhibit-a", {
        "TodoAppDown": "active", "TodoHighErrorRate": "suppressed", "TodoErrorBudgetBurn": "suppressed",
        "TodoLatencyBudgetBurn": "suppressed", "TodoBackupFailing": "active"})
    assert seen["TodoHighErrorRate"]["inhibitedBy"], seen
    wait_for_states(alertmanager, "inhibit-b", {"TodoHighErrorRate": "active"})


def test_database_unavailable_inhibits_the_app_s_errors_and_saturation(alertmanager):
    post_alerts(alertmanager, [
        alert("TodoDatabaseUnavailable", "critical", namespace="inhibit-c", pod="todo-1", cause="app_errors"),
        alert("TodoHighErrorRate", "critical", namespace="inhibit-c", pod="todo-1"),
        alert("TodoDatabaseSaturated", "warning", namespace="inhibit-c", pod="todo-1", cause="overloaded"),
        alert("TodoErrorBudgetBurn", "critical", namespace="inhibit-c", long_window="6h"),
    ])

    wait_for_states(alertmanager, "inhibit-c", {
        "TodoDatabaseUnavailable": "active", "TodoHighErrorRate": "suppressed",
        "TodoDatabaseSaturated": "suppressed", "TodoErrorBudgetBurn": "suppressed"})


def test_no_backup_at_all_inhibits_backup_too_old(alertmanager):
    post_alerts(alertmanager, [
        alert("TodoBackupNeverSucceeded", "critical", namespace="inhibit-d", job="todo"),
        alert("TodoBackupTooOld", "critical", namespace="inhibit-d", job="todo"),
    ])

    wait_for_states(alertmanager, "inhibit-d", {
        "TodoBackupNeverSucceeded": "active", "TodoBackupTooOld": "suppressed"})


def test_an_alert_alone_is_not_inhibited(alertmanager):
    post_alerts(alertmanager, [alert("TodoHighErrorRate", "critical", namespace="inhibit-e", pod="todo-1")])

    wait_for_states(alertmanager, "inhibit-e", {"TodoHighErrorRate": "active"})
