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


def panel_expressions(dashboard: str, title: str) -> dict[str, str]:
    """refId → expression of a panel's targets, Grafana's variables replaced
    (`$namespace` by the rendered rules' namespace, "prod")."""
    from monitoring_support import REPO_ROOT

    document = json.loads((REPO_ROOT / "dashboards" / dashboard).read_text())
    panels = [p for top in document["panels"] for p in [top, *top.get("panels", [])]]
    panel = next(p for p in panels if p["title"] == title)
    return {target["refId"]: target["expr"].replace("$namespace", "prod") for target in panel["targets"]}


def test_the_cronjob_panels_read_the_releases_cronjobs_from_kube_state_metrics(rendered_rules, tmp_path):
    """The kube-state-metrics panels of the backup row, evaluated by promtool
    on kube-state-metrics series with the chart's constants: the backup
    CronJob's age, "no run succeeded yet" (-1) for a drill CronJob that never
    completed, failed Jobs per CronJob with 0 for the others, and nothing
    from another release's CronJobs in the same namespace."""
    import shutil
    import subprocess

    import yaml

    from monitoring_support import require_binary

    promtool = require_binary("promtool")
    backup = panel_expressions("todo-operations.json", "Backup CronJob: last success (kube-state-metrics)")
    drill = panel_expressions("todo-operations.json", "Restore-drill CronJob: last success (kube-state-metrics)")
    failed = panel_expressions("todo-operations.json", "Failed backup and drill Jobs kept (kube-state-metrics)")
    ksm = 'job="kube-state-metrics", namespace="prod"'
    series = [
        (f'kube_cronjob_info{{{ksm}, cronjob="todo-todo-backend-backup"}}', "1x20"),
        (f'kube_cronjob_info{{{ksm}, cronjob="todo-todo-backend-restore-drill"}}', "1x20"),
        (f'kube_cronjob_info{{{ksm}, cronjob="shop-todo-backend-backup"}}', "1x20"),
        # The backup CronJob last succeeded at 60 s; the drill never did.
        (f'kube_cronjob_status_last_successful_time{{{ksm}, cronjob="todo-todo-backend-backup"}}', "60x20"),
        (f'kube_cronjob_status_last_successful_time{{{ksm}, cronjob="shop-todo-backend-backup"}}', "0x20"),
        # A failed drill Job, and another release's failed backup Job.
        (f'kube_job_failed{{{ksm}, job_name="todo-todo-backend-restore-drill-1", condition="true"}}', "1x20"),
        (f'kube_job_owner{{{ksm}, job_name="todo-todo-backend-restore-drill-1", owner_kind="CronJob", '
         f'owner_name="todo-todo-backend-restore-drill", owner_is_controller="true"}}', "1x20"),
        (f'kube_job_failed{{{ksm}, job_name="shop-todo-backend-backup-1", condition="true"}}', "1x20"),
        (f'kube_job_owner{{{ksm}, job_name="shop-todo-backend-backup-1", owner_kind="CronJob", '
         f'owner_name="shop-todo-backend-backup", owner_is_controller="true"}}', "1x20"),
    ]
    release = 'job="todo-todo-backend", namespace="prod"'
    checks = [
        (backup["A"], [('{cronjob="todo-todo-backend-backup", namespace="prod"}', 540)]),
        (backup["B"], [(f'todo:threshold_backup_rpo_seconds{{{release}}}', 93600)]),
        (drill["A"], [('{cronjob="todo-todo-backend-restore-drill", namespace="prod"}', -1)]),
        (drill["B"], [(f'todo:threshold_restore_drill_max_age_seconds{{{release}}}', 691200)]),
        (failed["A"], [('{namespace="prod", owner_name="todo-todo-backend-restore-drill"}', 1),
                       ('{namespace="prod", owner_name="todo-todo-backend-backup"}', 0)]),
    ]
    shutil.copy(rendered_rules, tmp_path / "rules.yaml")
    (tmp_path / "panels.test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": name, "values": values} for name, values in series],
            "promql_expr_test": [{"expr": expr, "eval_time": "10m",
                                  "exp_samples": [{"labels": labels, "value": value} for labels, value in samples]}
                                 for expr, samples in checks],
        }],
    }, sort_keys=False))

    result = subprocess.run([promtool, "test", "rules", "panels.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
