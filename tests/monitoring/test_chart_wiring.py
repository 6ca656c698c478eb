"""The chart ships the dashboards and the rules of this repository, not
copies: files/ links to dashboards/ and alerts/, one ConfigMap per dashboard
for Grafana's sidecar, one PrometheusRule, both off by default."""

from __future__ import annotations

import json
import os
import pathlib

import yaml

from render_rules import CHART_DIR, REPO_ROOT, render_chart, rule_groups

DASHBOARDS = sorted((REPO_ROOT / "dashboards").glob("*.json"))


def manifests(rendered: dict[str, str], template: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered.get(f"todo-backend/templates/{template}", "")) if doc]


def test_the_charts_files_are_links_to_the_one_source():
    for name in ("alerts", "dashboards"):
        link = CHART_DIR / "files" / name
        assert link.is_symlink(), f"{link} must link to {name}/, not copy it"
        assert link.resolve() == REPO_ROOT / name
        assert os.readlink(link) == f"../../../{name}", "relative, so it holds in any clone"


def test_dashboards_and_rules_are_off_by_default():
    rendered = render_chart({})

    assert manifests(rendered, "dashboards-configmap.yaml") == []
    assert manifests(rendered, "prometheusrule.yaml") == []


def test_one_configmap_per_dashboard_labelled_for_grafana_with_its_folder():
    rendered = render_chart({"dashboards": {"enabled": True, "folder": "Shop", "annotations": {"team": "core"}}})

    configmaps = manifests(rendered, "dashboards-configmap.yaml")

    assert len(configmaps) == len(DASHBOARDS)
    by_file = {name: cm for cm in configmaps for name in cm["data"]}
    for path in DASHBOARDS:
        configmap = by_file[path.name]
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["annotations"]["grafana_folder"] == "Shop"
        assert configmap["metadata"]["annotations"]["team"] == "core"
        assert configmap["metadata"]["namespace"] == "prod"
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text())
    assert len({cm["metadata"]["name"] for cm in configmaps}) == len(configmaps)


def test_the_prometheusrule_carries_the_selector_labels_and_every_rule_file():
    rendered = render_chart({"prometheus": {"rule": {"enabled": True, "additionalLabels": {"release": "kps"}}}})

    [rule] = manifests(rendered, "prometheusrule.yaml")

    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["namespace"] == "prod"
    names = {group["name"] for group in rule["spec"]["groups"]}
    assert {"todo-slo-recording", "todo-slo-alerts", "todo-app", "todo-telemetry",
            "todo-backups", "todo-logship", "todo-aggregation"} <= names
    assert rule["spec"]["groups"] == rule_groups({})
