"""The chart lints strictly and renders, with real Helm, for its defaults,
values-production.yaml and every ci/*-values.yaml file."""

from collections import Counter

import helm_python
import pytest

from chart_support import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    REPO_ROOT,
    VALUES_FILES,
    chart_values,
    containers,
    one,
    render_objects,
    values_for,
)


@pytest.mark.parametrize("case", sorted(VALUES_FILES))
def test_the_chart_lints_strictly(case):
    report = helm_python.lint(str(CHART_DIR), values_for(VALUES_FILES[case]), strict=True)

    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def expected_kinds(values) -> Counter:
    """How many objects of each kind `values` turn on: the fixed core, and
    each optional resource exactly when its switch is on."""
    backup, persistence = values["backup"], values["persistence"]
    dashboards = len(list((REPO_ROOT / "dashboards").glob("*.json"))) if values["dashboards"]["enabled"] else 0
    expected = Counter({
        "Deployment": 1,
        "Service": 1,
        # todo-app's and todo-sidecar's files, the migration hook's copy, one per dashboard.
        "ConfigMap": 2 + int(values["migration"]["enabled"]) + dashboards,
        "Job": int(values["migration"]["enabled"]),
        "CronJob": int(backup["enabled"]) + int(backup["enabled"] and backup["restoreDrill"]["enabled"]),
        "PersistentVolumeClaim": int(backup["enabled"] and backup["store"]["kind"] == "local"
                                     and persistence["enabled"] and not persistence["existingClaim"]),
        "ServiceAccount": int(values["serviceAccount"]["create"]),
        "PodDisruptionBudget": int(values["podDisruptionBudget"]["enabled"]),
        "HorizontalPodAutoscaler": int(values["autoscaling"]["enabled"]),
        "Ingress": int(values["ingress"]["enabled"]),
        "NetworkPolicy": 2 * int(values["networkPolicy"]["enabled"]),
        "ServiceMonitor": int(values["prometheus"]["serviceMonitor"]["enabled"]),
        "PrometheusRule": int(values["prometheus"]["rule"]["enabled"]),
        "Schedule": int(values["velero"]["enabled"]),
        "ResourceQuota": int(values["resourceQuota"]["enabled"]),
        "LimitRange": int(values["limitRange"]["enabled"]),
        "Certificate": int(values["tls"]["enabled"] and values["tls"]["certificate"]["create"]),
        "Secret": int(bool(values["database"]["password"]) and not values["database"]["existingSecret"]),
        "Pod": int(values["tests"]["enabled"]),
    })
    return +expected


@pytest.mark.parametrize("case", sorted(VALUES_FILES))
def test_the_chart_renders_exactly_the_resources_its_values_turn_on(case):
    values = chart_values(VALUES_FILES[case])

    objects = render_objects(values_for(VALUES_FILES[case]))

    assert Counter(obj["kind"] for obj in objects) == expected_kinds(values)
    names = [(obj["kind"], obj["metadata"]["name"]) for obj in objects]
    assert len(names) == len(set(names)), "two objects of one kind share a name"
    for obj in objects:
        expected_namespace = values["velero"]["namespace"] if obj["kind"] == "Schedule" else NAMESPACE
        assert obj["metadata"]["namespace"] == expected_namespace, (obj["kind"], obj["metadata"]["name"])
        assert obj["metadata"]["name"].startswith(f"{RELEASE}-todo-backend"), obj["metadata"]["name"]


def test_a_development_secret_and_every_optional_resource_render_when_turned_on():
    values = {
        "database": {"password": "dev-only"},
        "ingress": {"enabled": True, "hosts": [{"host": "a.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}]},
        "autoscaling": {"enabled": True},
        "networkPolicy": {"enabled": True},
        "prometheus": {"serviceMonitor": {"enabled": True}, "rule": {"enabled": True}},
        "dashboards": {"enabled": True},
        "resourceQuota": {"enabled": True},
        "limitRange": {"enabled": True},
        "tls": {"enabled": True, "secretName": "t", "certificate": {"create": True, "issuerRef": {"name": "ca"}}},
    }

    kinds = Counter(obj["kind"] for obj in render_objects(values))

    assert kinds == expected_kinds(chart_values([], values))
    assert set(kinds) >= {"Secret", "Ingress", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor",
                          "PrometheusRule", "ResourceQuota", "LimitRange", "Certificate"}


def test_the_pod_runs_the_app_with_the_sidecar_as_a_native_sidecar():
    objects = render_objects()

    spec = one(objects, "Deployment")["spec"]["template"]["spec"]

    sidecar = spec["initContainers"][0]
    assert sidecar["name"] == "todo-sidecar"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["/usr/local/bin/todo-sidecar", "run"]
    assert [c["name"] for c in spec["containers"]] == ["todo-app"]
    assert spec["containers"][0]["command"] == ["/usr/local/bin/todo-app", "serve"]
    images = {c["name"]: c["image"] for c in containers(spec)}
    assert images == {
        "todo-sidecar": "ghcr.io/todo-backend/todo-sidecar:0.1.0",
        "todo-app": "ghcr.io/todo-backend/todo-app:0.1.0",
    }


def test_the_service_exposes_the_api_the_app_health_and_the_pod_metrics():
    service = one(render_objects(), "Service")

    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}

    assert ports == {
        "http": (3000, "http"),
        "admin": (9000, "admin"),
        "sidecar-metrics": (9001, "sidecar-metrics"),
    }
