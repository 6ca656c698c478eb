"""The alert and recording rules as Prometheus loads them, rendered from the
chart (helm/todo-backend) exactly as its PrometheusRule carries them.

alerts/*.rules.yaml are Helm templates (their thresholds and windows come
from the chart's `alerting` values); this module is the one way tests and
drills turn them into a plain Prometheus rule file:

    from render_rules import render_rule_file
    render_rule_file({"alerting": {"timeScale": 0.01, "backup": {"rpo": "2m"}}}, path)

so the rules promtool and a drill's Prometheus load are the chart's rules,
same text after templating, never a second copy.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "todo-backend"
RULE_TEMPLATE = "todo-backend/templates/prometheusrule.yaml"


def deep_merge(base: dict, override: dict) -> dict:
    """`override` merged into a copy of `base`, maps key by key (as Helm merges values)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render_chart(values: dict[str, Any] | None = None, *, name: str = "todo",
                 namespace: str = "prod") -> dict[str, str]:
    """Every manifest of the chart, rendered offline with `values` over the
    chart's defaults: {template path: manifest}."""
    import helm_python  # imported here: only tests that render need it

    chart = helm_python.Chart.load(str(CHART_DIR))
    try:
        return chart.render(values or {}, name=name, namespace=namespace, is_install=True)
    finally:
        chart.close()


def rule_groups(values: dict[str, Any] | None = None, **release: str) -> list[dict[str, Any]]:
    """The `spec.groups` of the chart's PrometheusRule rendered with `values`
    (the rule is switched on whatever `values` say)."""
    values = deep_merge(values or {}, {"prometheus": {"rule": {"enabled": True}}})
    manifests = render_chart(values, **release)
    manifest = manifests.get(RULE_TEMPLATE, "")
    documents = [doc for doc in yaml.safe_load_all(manifest) if doc]
    rules = [doc for doc in documents if doc.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        raise AssertionError(f"{RULE_TEMPLATE} rendered {len(rules)} PrometheusRules, expected 1")
    return rules[0]["spec"]["groups"]


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, descriptions) as `|` blocks, for people reading the file."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _string)


def render_rule_file(values: dict[str, Any] | None, out_path: str | pathlib.Path,
                     **release: str) -> pathlib.Path:
    """Writes the chart's rule groups, rendered with `values`, to `out_path`
    as a Prometheus rule file (`groups: [...]`) and returns the path.
    `release` may name the release (`name=`, default "todo") and its
    `namespace=` (default "prod")."""
    out_path = pathlib.Path(out_path)
    groups = rule_groups(values, **release)
    out_path.write_text(yaml.dump({"groups": groups}, Dumper=_BlockDumper,
                                  sort_keys=False, width=1000))
    return out_path


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: render_rules.py OUT_FILE  (default values)")
    print(render_rule_file({}, sys.argv[1]))
