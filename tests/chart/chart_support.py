"""Rendering the chart with real Helm (helm-python-sdk: Helm's Go SDK through
ctypes) and reading what it renders, for every test of tests/chart."""

from __future__ import annotations

import copy
import functools
import pathlib
from typing import Any, Iterable

import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CHART_DIR = REPO_ROOT / "helm" / "todo-backend"
RELEASE = "todo"
NAMESPACE = "todo"

# The Secret that ci/production-values.yaml names stands for the one an
# operator creates; the values files of the chart are rendered as they are.
VALUES_FILES = {
    "defaults": [],
    "values-production": ["values-production.yaml"],
    **{
        path.name.removesuffix("-values.yaml"): [f"ci/{path.name}"]
        for path in sorted((CHART_DIR / "ci").glob("*-values.yaml"))
    },
}


def load_values_file(relative: str) -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / relative).read_text()) or {}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: maps merge key by key, the rest is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def values_for(files: Iterable[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for relative in files:
        values = merge(values, load_values_file(relative))
    return merge(values, extra or {})


def chart_values(files: Iterable[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values the templates see: the chart's values.yaml under the files and `extra`."""
    return merge(load_values_file("values.yaml"), values_for(files, extra))


@functools.lru_cache(maxsize=1)
def chart():
    import helm_python

    return helm_python.Chart.load(str(CHART_DIR))


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path → rendered text, as `helm install --dry-run` renders it."""
    return chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render, NOTES.txt aside."""
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def render_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return manifests(render(values))


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload (Deployment, Job, CronJob, Pod), else None."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec.get("containers", [])


def config_file(objects: list[dict[str, Any]], suffix: str, key: str) -> dict[str, Any]:
    """A program's configuration file, parsed, from the ConfigMap named `<fullname>-<suffix>`."""
    configmap = one(objects, "ConfigMap", f"{RELEASE}-todo-backend-{suffix}")
    return yaml.safe_load(configmap["data"][key]) or {}
