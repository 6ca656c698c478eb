"""Drill 1: normal traffic, and what the dashboards and the pager make of it.

A few hundred API requests of every kind from two owners. Then: every
expression of every dashboard panel returns data from Prometheus (with the
dashboard's variables filled as Grafana fills them), no alert fires, and the
log store has exactly one request line per request, found by its X-Request-Id.
"""

import collections
import time
import uuid

from drill_harness import (dashboard_queries, dashboard_variables, grafana_values, start_monitoring,
                           start_stack, substitute, wait_until)

ROUNDS = 30
# TodoHighErrorRate's window plus its `for:` at the default drill time scale.
QUIET_S = 30


def traffic(app, token: str, other_token: str) -> list[tuple[str, int]]:
    """One round of every kind of request an owner makes, plus the usual
    client mistakes; returns (request id, status) of each."""
    session, other = app.session(token), app.session(other_token)
    sent = []

    def call(client, method: str, path: str, **kwargs) -> dict | None:
        request_id = f"drill-1-{uuid.uuid4().hex}"
        response = client.request(method, f"{app.api}{path}", headers={"X-Request-Id": request_id},
                                  timeout=10, **kwargs)
        sent.append((request_id, response.status_code))
        return response.json() if response.content and response.status_code < 300 else None

    todo = call(session, "POST", "/todos", json={"title": "drill 1", "description": "normal traffic"})
    call(session, "POST", "/todos", json={"title": "drill 1, second"})
    page = call(session, "GET", "/todos?limit=1")
    if page and page.get("next_cursor"):
        call(session, "GET", f"/todos?limit=1&cursor={page['next_cursor']}")
    call(session, "GET", "/todos?completed=false")
    call(session, "GET", f"/todos/{todo['id']}")
    call(session, "PATCH", f"/todos/{todo['id']}", json={"completed": True})
    call(other, "GET", f"/todos/{todo['id']}")                        # 404: someone else's
    call(session, "POST", "/todos", json={"title": ""})               # 422
    call(app.session(None), "GET", "/todos")                          # 401
    call(session, "DELETE", f"/todos/{todo['id']}")
    return sent


def test_normal_traffic_fills_every_dashboard_panel_pages_nobody_and_logs_each_request_once(
        pod, binaries, repo_root, certificate, figures):
    # Arrange: a pod with a backup taken and restore-drilled, watched by
    # Prometheus and Alertmanager.
    stack = start_stack(pod, binaries, repo_root, certificate)
    monitoring = start_monitoring(pod, repo_root, {"todo-0": stack.sidecar.target})
    app = stack.app
    alice, bob = app.create_key("alice"), app.create_key("bob")
    assert stack.sidecar.cli("backup", "run").returncode == 0
    # What the weekly restore-drill CronJob runs (the chart's cronjob-restore-drill).
    drill = stack.sidecar.cli("backup", "verify", "--latest", "--restore-drill")
    assert drill.returncode == 0, drill.stderr

    # Act: a few hundred requests of every kind from two owners.
    sent = []
    traffic_started = time.monotonic()
    for round_number in range(ROUNDS):
        sent += traffic(app, alice, bob) if round_number % 2 else traffic(app, bob, alice)
    statuses = collections.Counter(status for _, status in sent)

    # Assert: one request line per request in the log store.
    ids = [request_id for request_id, _ in sent]
    wait_until("every request line in the log store", lambda: not stack.logs.missing(ids), 30,
               seen=lambda: f"{len(stack.logs.missing(ids))} missing")
    received = collections.Counter(i for i in stack.logs.request_ids() if i in set(ids))
    assert all(count == 1 for count in received.values()), \
        f"request lines received more than once: {[i for i, c in received.items() if c > 1][:5]}"

    # Assert: no alert fired, nothing reached a receiver, once the alerts'
    # windows and `for:` durations (30 s at this time scale) have passed.
    wait_until("the alerts' windows have passed", lambda: time.monotonic() - traffic_started >= QUIET_S, QUIET_S + 1)
    firing = monitoring.firing_now()
    figures.update({
        "requests": len(sent),
        "statuses": dict(sorted(statuses.items())),
        "alerts_firing": len(firing),
        "lines_lost": len(stack.logs.missing(ids)),
    })
    assert not firing, f"alerts firing under normal traffic: {sorted(firing)}"
    assert not monitoring.webhook.notifications, \
        f"notifications under normal traffic: {[n.payload.get('alerts') for n in monitoring.webhook.notifications]}"
    assert set(statuses) == {200, 201, 204, 401, 404, 422}, statuses

    # Assert: every panel of every dashboard has data.
    dashboards = repo_root / "dashboards"
    queries = dashboard_queries(dashboards)
    figures["panel_expressions"] = len(queries)
    assert queries, f"no dashboard panel found in {dashboards}"
    values = grafana_values(monitoring.prometheus, dashboard_variables(dashboards),
                            {"namespace": "drill", "job": "todo-backend", "pod": "todo-0"})

    def empty_panels() -> list[tuple[str, str]]:
        problems = []
        for query in queries:
            if "kube_" in query.expr:
                # kube-state-metrics' series (the HPA's replicas): no
                # Kubernetes in a drill, so nothing can fill these panels.
                continue
            expr = substitute(query.expr, values)
            try:
                if not monitoring.prometheus.query(expr):
                    problems.append((f"{query.dashboard} / {query.panel}", f"empty: {expr}"))
            except AssertionError as error:
                problems.append((f"{query.dashboard} / {query.panel}", str(error)))
        return problems
    problems: list[tuple[str, str]] = []

    def every_panel_has_data() -> bool:
        problems[:] = empty_panels()
        return not problems
    wait_until("every dashboard panel has data", every_panel_has_data, 20,
               seen=lambda: "panels without data:\n" + "\n".join(f"{p}: {w}" for p, w in problems))
    figures["panel_expressions_with_data"] = len(queries) - sum("kube_" in query.expr for query in queries)
