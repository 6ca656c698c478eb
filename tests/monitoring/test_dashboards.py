"""The Grafana dashboards of dashboards/: what Grafana and the people
reading them need from each (checked structurally: there is no Grafana
server package to load them into; their PromQL is checked against a real
Prometheus in test_promql.py)."""

from __future__ import annotations

import itertools
import json
import pathlib
import re

import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO_ROOT / "dashboards").glob("*.json"))
EXPECTED_UIDS = {"todo-api", "todo-database", "todo-operations"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_the_three_dashboards_exist_with_their_stable_uids():
    assert {load(path)["uid"] for path in DASHBOARDS} == EXPECTED_UIDS
    for path in DASHBOARDS:
        assert path.stem == load(path)["uid"], "the file is named after its uid"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_a_dashboard_has_a_recent_schema_a_description_and_its_variables(path):
    dashboard = load(path)

    assert dashboard["schemaVersion"] >= 39
    assert dashboard["description"].strip()
    assert dashboard["title"].startswith("todo-backend / ")
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "pod"):
        assert variables[name]["type"] == "query"
        assert variables[name]["multi"] is True and variables[name]["includeAll"] is True, name
        assert variables[name]["datasource"] == DATASOURCE, name


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_a_dashboard_links_to_the_other_two(path):
    dashboard = load(path)

    linked = {link["url"].split("/")[2] for link in dashboard["links"] if link["url"].startswith("/d/")}

    assert linked == EXPECTED_UIDS - {dashboard["uid"]}
    for link in dashboard["links"]:
        if link["url"].startswith("/d/"):
            assert link["keepTime"] and link["includeVars"], link["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_panel_ids_are_unique(path):
    ids = [panel["id"] for panel in panels(load(path))]

    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_no_two_panels_overlap(path):
    boxes = [(panel["title"], panel["gridPos"]) for panel in load(path)["panels"]]

    for (first, a), (second, b) in itertools.combinations(boxes, 2):
        apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                 or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
        assert apart, f"{first!r} {a} overlaps {second!r} {b}"
    for title, box in boxes:
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24, title


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_panel_has_the_datasource_variable_a_unit_and_a_description_of_good_and_bad(path):
    for panel in panels(load(path)):
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel["datasource"] == DATASOURCE, title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        description = panel.get("description", "")
        assert "Good:" in description and "Bad:" in description, f"{title}: say what good and bad look like"


def thresholds(dashboard: dict, title: str) -> list[float]:
    panel = next(panel for panel in panels(dashboard) if panel["title"] == title)
    return [step["value"] for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"] if step["value"] is not None]


def seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration[-1]]


@pytest.fixture(scope="module")
def defaults() -> dict:
    """The chart's default `alerting` values: what static colour steps follow."""
    return yaml.safe_load((REPO_ROOT / "helm" / "todo-backend" / "values.yaml").read_text())["alerting"]


@pytest.fixture(scope="module")
def burn_factors(rendered_rules) -> set[float]:
    """The burn-rate factors of TodoErrorBudgetBurn (14.4, 6, 3, 1), read from the rendered rules."""
    factors = {float(factor) for group in yaml.safe_load(rendered_rules.read_text())["groups"]
               for rule in group["rules"] if rule.get("alert") == "TodoErrorBudgetBurn"
               for factor in re.findall(r"> \(([0-9.]+) \* \(1 - ", rule["expr"])}
    assert factors, "no burn-rate factor found in TodoErrorBudgetBurn"
    return factors


def test_static_threshold_steps_follow_the_charts_default_alerting_values(defaults, burn_factors):
    api = load(REPO_ROOT / "dashboards" / "todo-api.json")
    database = load(REPO_ROOT / "dashboards" / "todo-database.json")
    operations = load(REPO_ROOT / "dashboards" / "todo-operations.json")
    error_budget = 1 - defaults["slo"]["availability"]["target"]

    assert thresholds(api, "Error ratio against the SLO") == pytest.approx([error_budget, max(burn_factors) * error_budget])
    assert float(defaults["slo"]["latency"]["thresholdSeconds"]) in thresholds(api, "Latency p50 / p95 / p99 by route")
    for title in ("Error budget burn rate now", "Latency budget burn rate now"):
        assert set(thresholds(api, title)) <= burn_factors, title
        assert max(burn_factors) in thresholds(api, title), title
    assert thresholds(database, "Requests waiting to start (queue depth)") == [defaults["database"]["queueDepth"]]
    assert thresholds(database, "Database errors by pod and kind") == [defaults["database"]["unavailableErrorsPerSecond"]]
    assert thresholds(api, "5xx ratio by pod") == [defaults["highErrorRate"]["ratio"]]
    assert thresholds(operations, "Newest backup age vs RPO") == [seconds(defaults["backup"]["rpo"])]
    assert thresholds(operations, "Restore drill age") == [seconds(defaults["backup"]["restoreDrillMaxAge"])]
    assert thresholds(operations, "Backup CronJob: last success (kube-state-metrics)") == [seconds(defaults["backup"]["rpo"])]
    assert thresholds(operations, "Restore-drill CronJob: last success (kube-state-metrics)") == [
        seconds(defaults["backup"]["restoreDrillMaxAge"])]
    assert thresholds(operations, "Shipping lag") == [defaults["logship"]["lagBytes"]]
    # Those steps are the chart's defaults, whatever the release's values: the panel says so.
    for dashboard, title in [(api, "Error ratio against the SLO"), (api, "Latency p50 / p95 / p99 by route"),
                             (database, "Requests waiting to start (queue depth)"), (database, "Database errors by pod and kind"),
                             (api, "5xx ratio by pod"), (operations, "Newest backup age vs RPO"),
                             (operations, "Restore drill age"), (operations, "Shipping lag"),
                             (operations, "Backup CronJob: last success (kube-state-metrics)"),
                             (operations, "Restore-drill CronJob: last success (kube-state-metrics)")]:
        description = next(panel for panel in panels(dashboard) if panel["title"] == title)["description"]
        assert "chart's default" in description, f"{title}: say that the colour steps follow the chart's default"


# Panel → the constant recording rule (alerts/constants.rules.yaml) it
# computes against or draws as its threshold line: the release's value, not
# the chart's default.
PANELS_ON_CONSTANTS = {
    ("todo-api.json", "Error ratio against the SLO"): "todo:slo_availability_objective",
    ("todo-api.json", "Latency p50 / p95 / p99 by route"): "todo:slo_latency_threshold_seconds",
    ("todo-api.json", "Error budget remaining (30 days)"): "todo:slo_availability_objective",
    ("todo-api.json", "Error budget burn rate now"): "todo:slo_availability_objective",
    ("todo-api.json", "Latency budget remaining (30 days)"): "todo:slo_latency_objective",
    ("todo-api.json", "Latency budget burn rate now"): "todo:slo_latency_objective",
    ("todo-api.json", "Replicas (HPA)"): "todo:hpa:info",
    ("todo-database.json", "Requests waiting to start (queue depth)"): "todo:threshold_db_queue_depth",
    ("todo-database.json", "Database errors by pod and kind"): "todo:threshold_db_unavailable_errors_per_second",
    ("todo-api.json", "5xx ratio by pod"): "todo:threshold_high_error_ratio",
    ("todo-operations.json", "Newest backup age vs RPO"): "todo:threshold_backup_rpo_seconds",
    ("todo-operations.json", "Restore drill age"): "todo:threshold_restore_drill_max_age_seconds",
    ("todo-operations.json", "Shipping lag"): "todo:threshold_logship_lag_bytes",
    ("todo-operations.json", "Backup CronJob: last success (kube-state-metrics)"): "todo:threshold_backup_rpo_seconds",
    ("todo-operations.json", "Restore-drill CronJob: last success (kube-state-metrics)"):
        "todo:threshold_restore_drill_max_age_seconds",
    ("todo-operations.json", "Failed backup and drill Jobs kept (kube-state-metrics)"): "todo:cronjob:info",
}


@pytest.mark.parametrize("where, constant", PANELS_ON_CONSTANTS.items(), ids=lambda item: str(item))
def test_a_panel_with_an_objective_or_threshold_reads_the_releases_value(where, constant):
    path, title = where
    panel = next(panel for panel in panels(load(REPO_ROOT / "dashboards" / path)) if panel["title"] == title)

    exprs = [target["expr"] for target in panel["targets"]]

    assert any(constant in expr for expr in exprs), f"{title}: does not read {constant}"
    # The join to the release's series is on the labels the constants carry.
    for expr in exprs:
        if constant in expr and " on (" in expr:
            assert re.search(r"on \((namespace, job|namespace, horizontalpodautoscaler|namespace, cronjob|namespace, owner_name)\)", expr), expr


def numbers(expr: str) -> set[float]:
    """The number literals of a PromQL expression, without range windows and
    histogram_quantile's quantile."""
    text = re.sub(r"\[[^\]]*\]", "", expr)
    text = re.sub(r"histogram_quantile\(\s*[0-9.]+\s*,", "histogram_quantile(", text)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    return {float(n) for n in re.findall(r"(?<![A-Za-z0-9_:.])[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?(?![A-Za-z0-9_:])", text)}


def test_no_dashboard_expression_carries_an_objective_or_a_threshold_as_a_number(defaults):
    from monitoring_support import dashboard_expressions

    slo = defaults["slo"]
    values = {slo["availability"]["target"], 1 - slo["availability"]["target"],
              slo["latency"]["target"], 1 - slo["latency"]["target"], float(slo["latency"]["thresholdSeconds"]),
              defaults["highErrorRate"]["ratio"], defaults["database"]["unavailableErrorsPerSecond"],
              defaults["database"]["queueDepth"], defaults["logship"]["lagBytes"],
              seconds(defaults["backup"]["rpo"]), seconds(defaults["backup"]["restoreDrillMaxAge"])}

    found = [(where, expr) for where, expr in dashboard_expressions()
             if any(number == pytest.approx(value) for number in numbers(expr) for value in values)]

    assert not found, "\n".join(f"{where}: {expr}" for where, expr in found)


def test_numbers_are_found_in_promql():
    assert numbers('1 - x{le="0.25"} / 0.001 > 14.4 and histogram_quantile(0.99, y[5m]) > 1e-3') == {1, 0.001, 14.4, 0.001}


def test_a_panel_on_kube_state_metrics_alone_says_when_it_is_missing():
    on_kube_state_metrics = []
    for path in DASHBOARDS:
        for panel in panels(load(path)):
            if panel["type"] != "row" and all("kube_" in target["expr"] for target in panel["targets"]):
                on_kube_state_metrics.append(panel["title"])
                assert "kube-state-metrics" in panel["fieldConfig"]["defaults"]["noValue"], panel["title"]

    assert {"Replicas (HPA)", "Backup CronJob: last success (kube-state-metrics)",
            "Restore-drill CronJob: last success (kube-state-metrics)",
            "Failed backup and drill Jobs kept (kube-state-metrics)"} <= set(on_kube_state_metrics)


def test_the_backup_row_watches_the_releases_cronjobs_through_kube_state_metrics():
    """With the local store the sidecars export no todo_backup_* series: the
    CronJobs' own series (those the alerts read there) must be on the dashboard."""
    operations = load(REPO_ROOT / "dashboards" / "todo-operations.json")
    exprs = " ".join(target["expr"] for panel in panels(operations) for target in panel.get("targets", []))

    for series in ("kube_cronjob_status_last_successful_time", "kube_job_failed", "kube_job_owner"):
        assert series in exprs, series
    for component in ("backup", "restore-drill"):
        assert f'todo:cronjob:info{{namespace=~"$namespace", component="{component}"}}' in exprs, component
    # "No snapshot yet" was wrong with the local store: no value there means the sidecars cannot see the store.
    for title in ("Newest backup age vs RPO", "Restore drill age"):
        no_value = next(panel for panel in panels(operations) if panel["title"] == title)["fieldConfig"]["defaults"]["noValue"]
        assert "cannot read the store" in no_value, title


def test_the_per_pod_5xx_ratio_panel_computes_what_todohigherrorrate_alerts_on(rendered_rules):
    """The runbook's Verify step of TodoHighErrorRate reads this panel: same ratio, window and grouping."""
    api = load(REPO_ROOT / "dashboards" / "todo-api.json")
    [ratio, _] = next(panel for panel in panels(api) if panel["title"] == "5xx ratio by pod")["targets"]
    alert = next(rule for group in yaml.safe_load(rendered_rules.read_text())["groups"]
                 for rule in group["rules"] if rule.get("alert") == "TodoHighErrorRate")

    for expr in (ratio["expr"], alert["expr"]):
        assert 'status=~"5.."}[5m]' in expr and "503" not in expr, expr
    assert "sum by (namespace, pod)" in ratio["expr"]
    assert "pod)" in alert["expr"].split("\n")[1]
