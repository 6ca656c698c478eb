"""The chart lints strictly and renders, with real Helm, for its defaults,
values-production.yaml and every ci/*-values.yaml file."""

import helm_python
import pytest

from chart_support import (
    CHART_DIR,
    VALUES_FILES,
    containers,
    one,
    render,
    render_objects,
    values_for,
)


@pytest.mark.parametrize("case", sorted(VALUES_FILES))
def test_the_chart_lints_strictly(case):
    report = helm_python.lint(str(CHART_DIR), values_for(VALUES_FILES[case]), strict=True)

    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("case", sorted(VALUES_FILES))
def test_the_chart_renders(case):
    rendered = render(values_for(VALUES_FILES[case]))

    assert any(path.endswith("templates/deployment.yaml") for path in rendered)


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
