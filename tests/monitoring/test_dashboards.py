"""The Grafana dashboards of dashboards/: what Grafana and the people
reading them need from each (checked structurally: there is no Grafana
server package to load them into; their PromQL is checked against a real
Prometheus in test_promql.py)."""

from __future__ import annotations

import itertools
import json
import pathlib

import pytest

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


def test_panels_with_an_slo_or_alert_threshold_show_it():
    api = load(REPO_ROOT / "dashboards" / "todo-api.json")
    database = load(REPO_ROOT / "dashboards" / "todo-database.json")
    operations = load(REPO_ROOT / "dashboards" / "todo-operations.json")

    # The chart's default alerting values (helm/todo-backend/values.yaml).
    assert 0.001 in thresholds(api, "Error ratio against the SLO")
    assert 0.0144 in thresholds(api, "Error ratio against the SLO")
    assert 0.25 in thresholds(api, "Latency p50 / p95 / p99 by route")
    assert 14.4 in thresholds(api, "Error budget burn rate now")
    assert 14.4 in thresholds(api, "Latency budget burn rate now")
    assert 100 in thresholds(database, "Executor queue depth")
    assert 26 * 3600 in thresholds(operations, "Newest backup age vs RPO")
    assert 8 * 86400 in thresholds(operations, "Restore drill age")
    assert 16 * 1024 * 1024 in thresholds(operations, "Shipping lag")


def test_the_hpa_panel_says_when_kube_state_metrics_is_missing():
    api = load(REPO_ROOT / "dashboards" / "todo-api.json")

    panel = next(panel for panel in panels(api) if panel["title"] == "Replicas (HPA)")

    assert "kube-state-metrics" in panel["fieldConfig"]["defaults"]["noValue"]
