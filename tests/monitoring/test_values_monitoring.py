"""helm/values-monitoring.yaml, the kube-prometheus-stack values: a retention
that covers the 30-day SLO windows, the plan's scrape interval, no Grafana
password in values, selectors that match what our chart renders with its
monitoring values, and the example Alertmanager routing, which amtool
accepts."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from monitoring_support import require_binary
from render_rules import CHART_DIR, REPO_ROOT, render_chart

VALUES = REPO_ROOT / "helm" / "values-monitoring.yaml"


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def our_manifests() -> list[dict]:
    """Our chart rendered with its monitoring values, in the namespace Grafana searches."""
    values = yaml.safe_load((CHART_DIR / "ci" / "monitoring-values.yaml").read_text())
    rendered = render_chart(values, name="todo", namespace="todo")
    return [doc for path, text in rendered.items() if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def of_kind(manifests: list[dict], kind: str) -> list[dict]:
    found = [doc for doc in manifests if doc.get("kind") == kind]
    assert found, f"the chart rendered no {kind}"
    return found


def days(duration: str) -> float:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[duration[-1]] / 86400


def test_prometheus_keeps_every_window_the_dashboards_and_rules_read_and_scrapes_every_30_seconds(stack, rendered_rules):
    """The plan said 15 days; the 30-day SLO budget panels sum over [30d],
    which 15 days of data cannot answer."""
    import re

    from monitoring_support import dashboard_expressions, rule_expressions

    spec = stack["prometheus"]["prometheusSpec"]
    windows = {window for _, expr in dashboard_expressions() + rule_expressions(rendered_rules)
               for window in re.findall(r"\[(\d+[smhdw])(?::[^\]]*)?\]|offset (\d+[smhdw])", expr)
               for window in window if window}

    assert max(days(window) for window in windows) == 30, "the SLO period is the longest window"
    assert days(spec["retention"]) >= max(days(window) for window in windows)
    assert spec["scrapeInterval"] == "30s"


def test_the_grafana_admin_password_comes_from_a_secret(stack):
    grafana = stack["grafana"]

    assert grafana["admin"]["existingSecret"]
    assert grafana["admin"]["passwordKey"]

    def keys(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)

    assert not {key for key in keys(stack) if key.lower() in {"password", "adminpassword"}}


def test_prometheus_selects_our_servicemonitor_and_prometheusrule(stack, our_manifests):
    spec = stack["prometheus"]["prometheusSpec"]

    for kind, selector in [("ServiceMonitor", "serviceMonitorSelector"), ("PrometheusRule", "ruleSelector")]:
        wanted = spec[selector]["matchLabels"]
        for manifest in of_kind(our_manifests, kind):
            labels = manifest["metadata"]["labels"]
            assert wanted.items() <= labels.items(), f"{kind} labels {labels} miss {wanted}"
    assert spec["serviceMonitorNamespaceSelector"] == {} and spec["ruleNamespaceSelector"] == {}


def test_grafana_s_sidecar_picks_up_our_dashboards(stack, our_manifests):
    sidecar = stack["grafana"]["sidecar"]["dashboards"]
    dashboards = [cm for cm in of_kind(our_manifests, "ConfigMap")
                  if sidecar["label"] in cm["metadata"].get("labels", {})]

    assert len(dashboards) == len(list((REPO_ROOT / "dashboards").glob("*.json")))
    for configmap in dashboards:
        assert configmap["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
        assert configmap["metadata"]["namespace"] in sidecar["searchNamespace"]
        assert sidecar["folderAnnotation"] in configmap["metadata"]["annotations"]


def test_alertmanager_routes_like_the_example_and_amtool_accepts_it(stack, tmp_path):
    amtool = require_binary("amtool")
    config = stack["alertmanager"]["config"]
    example = yaml.safe_load((REPO_ROOT / "alerts" / "alertmanager.example.yaml").read_text())
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))

    result = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert config == example
    # The pager's key file is in the Secret the stack mounts.
    pager = next(receiver for receiver in config["receivers"] if receiver.get("pagerduty_configs"))
    key_file = pager["pagerduty_configs"][0]["routing_key_file"]
    mounted = stack["alertmanager"]["alertmanagerSpec"]["secrets"]
    assert any(key_file.startswith(f"/etc/alertmanager/secrets/{secret}/") for secret in mounted)
