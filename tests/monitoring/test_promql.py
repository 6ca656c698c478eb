"""Every PromQL expression of the dashboards and the rules parses in a real
Prometheus (its query API answers 400 for a syntax error), and names only
metrics that exist."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from monitoring_support import dashboard_expressions, metric_names, rule_expressions


def parse_error(prometheus: str, expr: str) -> str | None:
    """Prometheus's error for `expr`, or None when it evaluates."""
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
            return None if body["status"] == "success" else body.get("error", str(body))
    except urllib.error.HTTPError as error:
        return json.load(error).get("error", str(error))


def test_every_dashboard_expression_parses_in_prometheus(prometheus):
    expressions = dashboard_expressions()

    failures = [f"{where}: {error}\n    {expr}" for where, expr in expressions
                if (error := parse_error(prometheus, expr)) is not None]

    assert len(expressions) > 40
    assert not failures, "\n".join(failures)


def test_every_rule_expression_parses_in_prometheus(prometheus, rendered_rules):
    expressions = rule_expressions(rendered_rules)

    failures = [f"{where}: {error}\n    {expr}" for where, expr in expressions
                if (error := parse_error(prometheus, expr)) is not None]

    assert len(expressions) > 40
    assert not failures, "\n".join(failures)


def test_a_broken_expression_is_reported_with_its_place(prometheus):
    assert "parse error" in parse_error(prometheus, "sum(rate(todo_http_requests_total[5m])")


def test_the_dashboards_use_only_recording_rules_that_exist(rendered_rules):
    import yaml

    recorded = {rule["record"] for group in yaml.safe_load(rendered_rules.read_text())["groups"]
                for rule in group["rules"] if "record" in rule}
    used = {name for _, expr in dashboard_expressions() for name in metric_names(expr) if ":" in name}

    assert used, "the SLO panels use the recording rules"
    assert used <= recorded, used - recorded


def test_metric_names_are_found_in_promql():
    expr = ('sum by (route, le) (rate(todo_http_request_duration_seconds_bucket{route="/x", le="0.25"}[5m])) '
            '/ on (namespace) group_left todo:http_requests:rate5m > 1e9 and up offset 1d')

    assert metric_names(expr) == {"todo_http_request_duration_seconds_bucket", "todo:http_requests:rate5m", "up"}
