"""The alert and recording rules: the chart renders them into a rule file
Prometheus accepts, every alert says what it must, promtool's unit tests
pass with a firing and a silent case for every alert, and the chart's
values (thresholds, time scale) reach the rules."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from monitoring_support import require_binary
from render_rules import render_rule_file, rule_groups

HERE = pathlib.Path(__file__).resolve().parent
UNIT_TESTS = sorted((HERE / "rules").glob("*.test.yaml"))
RANGE = re.compile(r"\[(\d+[smhd])\]")
DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def alerts(groups):
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def seconds(duration: str) -> int:
    return int(duration[:-1]) * DURATION_SECONDS[duration[-1]]


def test_the_rendered_rules_pass_promtool_check_rules(rendered_rules):
    promtool = require_binary("promtool")

    result = subprocess.run([promtool, "check", "rules", str(rendered_rules)],
                            capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_file_is_the_charts_prometheusrule_spec(rendered_rules):
    in_chart = rule_groups({})

    loaded = yaml.safe_load(rendered_rules.read_text())["groups"]

    assert loaded == in_chart


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda path: path.name)
def test_promtool_unit_tests_pass(unit_test, rendered_rules, tmp_path):
    promtool = require_binary("promtool")
    # promtool resolves rule_files next to the test file.
    shutil.copy(rendered_rules, tmp_path / "rules.yaml")
    shutil.copy(unit_test, tmp_path / unit_test.name)

    result = subprocess.run([promtool, "test", "rules", unit_test.name],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stdout + result.stderr


def alerts_to_test(groups) -> set[tuple[str, str]]:
    """What must be tested firing and silent: (alertname, long_window) for
    the burn-rate alerts, each window a rule of its own; (alertname, "") for
    the others."""
    return {(rule["alert"], rule["labels"].get("long_window", "")) for rule in alerts(groups)}


def test_every_alert_and_every_burn_rate_window_has_a_unit_test_where_it_fires_and_one_where_it_stays_silent(
        rendered_rules):
    names = alerts_to_test(yaml.safe_load(rendered_rules.read_text())["groups"])
    windows = {name: {window for alert, window in names if alert == name} for name, _ in names}
    firing, silent = set(), set()
    for unit_test in UNIT_TESTS:
        for case in yaml.safe_load(unit_test.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                name = check["alertname"]
                # promtool compares the whole list of an alert's instances at
                # an eval_time: a window not listed is checked silent there.
                fired = {alert["exp_labels"].get("long_window", "") for alert in check.get("exp_alerts") or []}
                firing |= {(name, window) for window in fired}
                silent |= {(name, window) for window in windows.get(name, {""}) - fired}

    assert names - firing == set(), "alerts (and burn-rate windows) never tested firing"
    assert names - silent == set(), "alerts (and burn-rate windows) never tested silent"
    assert firing | silent <= names, "unit tests name alerts or windows that do not exist"


def test_every_burn_rate_window_is_tested_just_under_and_just_over_its_factor(rendered_rules):
    """A window's edge: a ratio under its factor x the budget leaves it silent
    while a lower factor's window fires (or nothing does, under 1x); one just
    over fires it. Checked on the cases' input series, by their ratio."""
    rules = [rule for rule in alerts(yaml.safe_load(rendered_rules.read_text())["groups"])
             if rule["alert"] in {"TodoErrorBudgetBurn", "TodoLatencyBudgetBurn"}]
    factors = {(rule["alert"], rule["labels"]["long_window"]): float(re.search(r"> \(([0-9.]+) \*", rule["expr"])[1])
               for rule in rules}
    edges: dict[tuple[str, str], set[str]] = {key: set() for key in factors}
    for case in yaml.safe_load((HERE / "rules" / "slo.test.yaml").read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            name, fired = check["alertname"], {a["exp_labels"]["long_window"] for a in check.get("exp_alerts") or []}
            if name not in {"TodoErrorBudgetBurn", "TodoLatencyBudgetBurn"} or check["eval_time"] != "20m":
                continue
            ratio = burn_ratio(case, name)
            if ratio is None:
                continue
            budget = 0.001 if name == "TodoErrorBudgetBurn" else 0.01
            for (alert, window), factor in factors.items():
                if alert != name:
                    continue
                edge = factor * budget
                if edge * 0.85 <= ratio <= edge * 1.15:
                    assert (window in fired) == (ratio > edge), f"{case['name']}: {window} at {ratio} (edge {edge})"
                    edges[(alert, window)].add("over" if ratio > edge else "under")

    assert {key: sides for key, sides in edges.items() if sides != {"under", "over"}} == {}


def burn_ratio(case: dict, alertname: str) -> float | None:
    """The steady ratio of a case's series: 5xx among requests, or requests
    over the latency threshold (from `0+NxM` series), or None."""
    per_minute = {}
    for series in case["input_series"]:
        step = re.fullmatch(r"0\+(\d+)x\d+", series["values"])
        if step is None:
            return None
        per_minute[series["series"]] = int(step[1])
    if alertname == "TodoErrorBudgetBurn":
        total = sum(n for s, n in per_minute.items() if s.startswith("todo_http_requests_total"))
        errors = sum(n for s, n in per_minute.items() if s.startswith("todo_http_requests_total") and 'status="5' in s)
        return errors / total if total else None
    fast = sum(n for s, n in per_minute.items() if "_bucket" in s and 'le="0.25"' in s)
    count = sum(n for s, n in per_minute.items() if s.startswith("todo_http_request_duration_seconds_count"))
    return 1 - fast / count if count else None


def test_every_alert_has_a_severity_a_for_and_its_annotations(rendered_rules):
    for rule in alerts(yaml.safe_load(rendered_rules.read_text())["groups"]):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert seconds(rule["for"]) >= 60, f"{name}: a for: under a minute flaps"
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert "{{ $labels." in annotations["description"], f"{name}: description names no series"
        assert "$value" in annotations["description"] or name in VALUELESS, f"{name}: description without the value"
        assert annotations["runbook_url"].endswith("#" + name.lower()), name


# Alerts whose value is only "1" (a state, not a measure): the description says the state instead.
VALUELESS = {"TodoAppDown", "TodoSidecarDown", "TodoBackupNeverSucceeded", "TodoBackupJobFailed"}


def test_recording_rules_exist_for_every_burn_rate_window(rendered_rules):
    records = {rule["record"] for group in yaml.safe_load(rendered_rules.read_text())["groups"]
               for rule in group["rules"] if "record" in rule}

    for window in ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]:
        for sli in ["todo:http_requests:rate", "todo:http_request_errors:rate",
                    "todo:http_request_errors:ratio_rate", "todo:http_requests_fast:ratio_rate"]:
            assert f"{sli}{window}" in records


def test_the_time_scale_shrinks_every_for_and_range_window(tmp_path):
    normal = rule_groups({})
    scaled = rule_groups({"alerting": {"timeScale": 1 / 60}})
    promtool = require_binary("promtool")

    for plain_group, scaled_group in zip(normal, scaled, strict=True):
        for plain, small in zip(plain_group["rules"], scaled_group["rules"], strict=True):
            name = plain.get("alert") or plain["record"]
            if "for" in plain:
                assert seconds(small["for"]) == max(1, seconds(plain["for"]) // 60), name
            plain_ranges = RANGE.findall(plain["expr"])
            small_ranges = RANGE.findall(small["expr"])
            for big, little in zip(plain_ranges, small_ranges, strict=True):
                if big == "1d" and "max_over_time(todo_aggregation_series_dropped_total" in plain["expr"]:
                    # Which targets are ours: an identity lookback, deliberately not scaled.
                    assert little == big, name
                else:
                    assert seconds(little) == max(1, seconds(big) // 60), f"{name}: {big} -> {little}"
    scaled_file = render_rule_file({"alerting": {"timeScale": 1 / 60}}, tmp_path / "scaled.yaml")
    result = subprocess.run([promtool, "check", "rules", str(scaled_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_scaled_alert_fires_in_seconds(tmp_path):
    promtool = require_binary("promtool")
    render_rule_file({"alerting": {"timeScale": 1 / 60}}, tmp_path / "rules.yaml")
    (tmp_path / "scaled.test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1s",
        "tests": [{
            "interval": "1s",
            "input_series": [{"series": 'todo_app_up{namespace="prod", job="todo", pod="todo-1"}',
                              "values": "1 0 0 0 0 0"}],
            "alert_rule_test": [
                {"eval_time": "2s", "alertname": "TodoAppDown", "exp_alerts": []},
                {"eval_time": "3s", "alertname": "TodoAppDown", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "namespace": "prod", "job": "todo", "pod": "todo-1"},
                    "exp_annotations": {
                        "summary": "todo-app in a pod is down.",
                        "description": "The sidecar of pod todo-1 (prod) answers but cannot scrape todo-app's "
                                       "/metrics on :9000: the app is down, restarting or stuck, and its metrics are "
                                       "missing. Requests routed to this pod fail until its readiness probe takes "
                                       "it out of the Service.",
                        "runbook_url": "https://github.com/todo-backend/todo-backend/blob/main/docs/runbooks.md#todoappdown",
                    }}]},
            ],
        }],
    }))

    result = subprocess.run([promtool, "test", "rules", "scaled.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


def expression(groups, alert: str) -> str:
    return next(rule["expr"] for rule in alerts(groups) if rule["alert"] == alert)


def test_thresholds_come_from_the_alerting_values():
    groups = rule_groups({"alerting": {
        "backup": {"rpo": "12h", "restoreDrillMaxAge": "15d"},
        "highErrorRate": {"ratio": 0.1, "minRequestsPerSecond": 2},
        "database": {"queueDepth": 7, "unavailableErrorsPerSecond": 0.5},
        "logship": {"lagBytes": 1048576},
        "slo": {"availability": {"target": 0.995}, "latency": {"target": 0.95, "thresholdSeconds": "0.5"}},
    }})
    recording = [rule["expr"] for group in groups for rule in group["rules"] if "record" in rule]

    assert "> 43200" in expression(groups, "TodoBackupTooOld")
    assert "offset 12h" in expression(groups, "TodoBackupNeverSucceeded")
    assert "> 1296000" in expression(groups, "TodoRestoreDrillTooOld")
    assert "> 43200," in expression(groups, "TodoBackupCronJobTooOld")
    assert "offset 12h" in expression(groups, "TodoBackupCronJobTooOld")
    assert "> 1296000," in expression(groups, "TodoRestoreDrillCronJobTooOld")
    assert "offset 15d" in expression(groups, "TodoRestoreDrillCronJobTooOld")
    assert ") > 0.1\n" in expression(groups, "TodoHighErrorRate")
    assert expression(groups, "TodoHighErrorRate").endswith("> 2")
    assert "> 7," in expression(groups, "TodoDatabaseSaturated")
    assert "> 0.5," in expression(groups, "TodoDatabaseUnavailable")
    assert "> 1048576" in expression(groups, "TodoLogShippingLagging")
    assert "(1 - 0.995)" in expression(groups, "TodoErrorBudgetBurn")
    assert "(1 - 0.95)" in expression(groups, "TodoLatencyBudgetBurn")
    assert any('le="0.5"' in expr for expr in recording)


def test_503s_count_as_errors_only_when_asked():
    def error_rate(values):
        groups = rule_groups(values)
        return next(rule["expr"] for group in groups for rule in group["rules"]
                    if rule.get("record") == "todo:http_request_errors:rate5m")

    assert 'status!="503"' in error_rate({})
    assert 'status!="503"' not in error_rate({"alerting": {"slo": {"availability": {"countRetryable503": True}}}})


def test_the_hpa_alert_names_the_releases_hpa():
    groups = rule_groups({}, name="shop", namespace="team-a")

    hpa = expression(groups, "TodoHPAMaxedOut")

    assert 'namespace="team-a"' in hpa
    assert 'horizontalpodautoscaler="shop-todo-backend"' in hpa


def test_the_cronjob_alerts_name_the_releases_cronjobs():
    groups = rule_groups({}, name="shop", namespace="team-a")

    failed = expression(groups, "TodoBackupJobFailed")
    too_old = expression(groups, "TodoBackupCronJobTooOld")

    assert 'namespace="team-a"' in failed
    assert 'owner_name=~"shop-todo-backend-backup|shop-todo-backend-restore-drill"' in failed
    assert too_old.count('namespace="team-a", cronjob="shop-todo-backend-backup"}') == 3
    drill = expression(groups, "TodoRestoreDrillCronJobTooOld")
    assert drill.count('namespace="team-a", cronjob="shop-todo-backend-restore-drill"}') == 3


def test_without_restore_drills_the_job_alert_watches_the_backup_cronjob_alone():
    failed = expression(rule_groups({"backup": {"restoreDrill": {"enabled": False}}}), "TodoBackupJobFailed")

    assert 'owner_name=~"todo-todo-backend-backup"' in failed


def test_without_backups_the_chart_ships_no_backup_alerts():
    groups = rule_groups({"backup": {"enabled": False}})

    names = {rule["alert"] for rule in alerts(groups)}

    assert not names & {"TodoBackupTooOld", "TodoBackupNeverSucceeded", "TodoBackupFailing", "TodoRestoreDrillTooOld",
                        "TodoBackupJobFailed", "TodoBackupCronJobTooOld", "TodoRestoreDrillCronJobTooOld"}
    assert "TodoAppDown" in names


def test_without_restore_drills_the_chart_ships_no_drill_alert():
    names = {rule["alert"] for rule in alerts(rule_groups({"backup": {"restoreDrill": {"enabled": False}}}))}

    assert not names & {"TodoRestoreDrillTooOld", "TodoRestoreDrillCronJobTooOld"}
    assert "TodoBackupTooOld" in names


@pytest.mark.parametrize("alerting, wrong", [
    ({"backup": {"rpo": "26 hours"}}, "rpo"),
    ({"backup": {"restoreDrillMaxAge": "1w"}}, "restoreDrillMaxAge"),
    ({"timeScale": 0}, "timeScale"),
    ({"slo": {"availability": {"target": 99.9}}}, "target"),
    ({"slo": {"latency": {"thresholdSeconds": "0.3"}}}, "thresholdSeconds"),
    ({"highErrorRate": {"ratio": 5}}, "ratio"),
    ({"unknown": 1}, "unknown"),
])
def test_the_schema_refuses_alerting_values_the_rules_cannot_use(alerting, wrong):
    import helm_python

    with pytest.raises(helm_python.HelmError) as refused:
        rule_groups({"alerting": alerting})

    assert wrong in str(refused.value)


def constants(groups) -> dict[str, list[dict]]:
    """record name → the rules of group todo-constants with that name."""
    found: dict[str, list[dict]] = {}
    for group in groups:
        if group["name"] == "todo-constants":
            for rule in group["rules"]:
                found.setdefault(rule["record"], []).append(rule)
    return found


def test_the_dashboards_constants_carry_the_alerting_values_and_the_releases_labels():
    groups = rule_groups({"alerting": {
        "slo": {"availability": {"target": 0.995}, "latency": {"target": 0.95, "thresholdSeconds": "0.5"}},
        "highErrorRate": {"ratio": 0.1},
        "database": {"queueDepth": 7, "unavailableErrorsPerSecond": 0.5},
        "logship": {"lagBytes": 1048576},
        "backup": {"rpo": "12h", "restoreDrillMaxAge": "15d"},
    }}, name="shop", namespace="team-a")

    found = {name: [rule["expr"] for rule in rules] for name, rules in constants(groups).items()}

    assert found == {
        "todo:slo_availability_objective": ["vector(0.995)"],
        "todo:slo_latency_objective": ["vector(0.95)"],
        "todo:slo_latency_threshold_seconds": ["vector(0.5)"],
        "todo:threshold_high_error_ratio": ["vector(0.1)"],
        "todo:threshold_db_unavailable_errors_per_second": ["vector(0.5)"],
        "todo:threshold_db_queue_depth": ["vector(7)"],
        "todo:threshold_logship_lag_bytes": ["vector(1048576)"],
        "todo:threshold_backup_rpo_seconds": ["vector(43200)"],
        "todo:threshold_restore_drill_max_age_seconds": ["vector(1296000)"],
        "todo:hpa:info": ["vector(1)"],
        "todo:cronjob:info": ["vector(1)", "vector(1)"],
    }
    for rules in constants(groups).values():
        for rule in rules:
            # The ServiceMonitor's job is the chart's Service: the release's fullname.
            assert {"namespace": "team-a", "job": "shop-todo-backend"}.items() <= rule["labels"].items(), rule
    [hpa] = constants(groups)["todo:hpa:info"]
    assert hpa["labels"]["horizontalpodautoscaler"] == "shop-todo-backend"
    cronjobs = {rule["labels"]["component"]: rule["labels"] for rule in constants(groups)["todo:cronjob:info"]}
    assert cronjobs["backup"]["cronjob"] == cronjobs["backup"]["owner_name"] == "shop-todo-backend-backup"
    assert cronjobs["restore-drill"]["cronjob"] == "shop-todo-backend-restore-drill"


def test_without_backups_or_drills_no_backup_constant_names_a_cronjob():
    without_drills = constants(rule_groups({"backup": {"restoreDrill": {"enabled": False}}}))
    without_backups = constants(rule_groups({"backup": {"enabled": False}}))

    assert [rule["labels"]["component"] for rule in without_drills["todo:cronjob:info"]] == ["backup"]
    assert "todo:threshold_restore_drill_max_age_seconds" not in without_drills
    assert not {"todo:cronjob:info", "todo:threshold_backup_rpo_seconds"} & set(without_backups)
