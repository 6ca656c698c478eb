"""Drill 8: three replicas on one database, what the HPA's minimum looks like.

Three app + sidecar pairs start at the same moment against one fresh
database: the migrations are applied once; each sidecar ships its own pod's
log file to the same Loki-format and Elasticsearch-format receivers with no
line lost and no document id shared between pods; a revoked key is refused
by every replica within `auth.key_cache_ttl_seconds`; three sidecars
scheduled to back up at the same second publish one snapshot; Prometheus
sees three pods, and every per-pod dashboard panel shows three series.
"""

import collections
import datetime
import json
import re
import time

from drill_harness import (Load, LogReceiver, PostgresCluster, Prometheus, Sidecar, TodoApp, create_todo,
                           dashboard_queries, dashboard_variables, grafana_values, run_parallel, substitute,
                           tail, wait_until)

REPLICAS = 3
KEY_CACHE_TTL_S = 3
DELIVERY_DEADLINE_S = 30


def test_three_replicas_share_one_database_without_stepping_on_each_other(
        pod, binaries, repo_root, certificate, figures):
    # Arrange: one fresh database, one log store of each kind, one backup store.
    postgres = PostgresCluster(pod).init()
    database_url = postgres.url(postgres.create_database())
    logs = LogReceiver(pod).start()
    store = pod.root / "backups"
    # Every sidecar backs up at the same second of every minute, far enough
    # ahead for all of them to be running by then.
    backup_second = (datetime.datetime.now(datetime.timezone.utc).second + 20) % 60
    apps = [TodoApp(pod, binaries, repo_root, certificate, database_url, name=f"todo-app-{n}",
                    env={"APP__AUTH__KEY_CACHE_TTL_SECONDS": str(KEY_CACHE_TTL_S)}) for n in range(REPLICAS)]
    sidecars = [Sidecar(pod, binaries, app, database_url, loki_url=logs.url, elasticsearch_url=logs.url,
                        store=store, name=f"todo-sidecar-{n}", env={
                            "SIDECAR__LOGSHIP__SINKS__LOKI__LABELS__POD": f"todo-{n}",
                            "SIDECAR__BACKUP__SCHEDULE": f"{backup_second} * * * * *",
                            "SIDECAR__BACKUP__REFRESH_INTERVAL_SECONDS": "60",
                        }) for n, app in enumerate(apps)]

    # Act: all three pods start at once.
    started_at = time.monotonic()
    run_parallel([lambda app=app: app.start() for app in apps])
    figures["three_replicas_ready_s"] = time.monotonic() - started_at
    run_parallel([lambda sidecar=sidecar: sidecar.start() for sidecar in sidecars])
    prometheus = Prometheus(pod, {f"todo-{n}": sidecar.target for n, sidecar in enumerate(sidecars)}).start()

    # Assert: one replica applied the migrations, the others found nothing to do.
    applied = [app.service.name for app in apps if "applied database migrations" in app.service.log_path.read_text()]
    assert len(applied) == 1, f"replicas that applied migrations: {applied}"
    migrations = postgres.psql("SELECT count(*), count(DISTINCT version) FROM __diesel_schema_migrations",
                               database_url.rsplit("/", 1)[1].split("?")[0])
    count, distinct = migrations.split("|")
    assert count == distinct, f"a migration was recorded twice: {migrations}"

    # Act: traffic through every replica.
    token = apps[0].create_key("alice")
    loads = [Load(lambda app=app: app.session(token),
                  lambda s, rid, app=app: create_todo(s, app.api, f"{app.service.name}-{rid}", "drill-8"),
                  workers=1, max_requests=60).start() for app in apps]
    outcomes = {app.service.name: load.join(120) for app, load in zip(apps, loads)}

    # Assert: every line reached both stores, from its own pod, no _id shared.
    expected = {f"{name}-{o.request_id}": name for name, done in outcomes.items() for o in done if o.status}
    assert all(o.status == 201 for done in outcomes.values() for o in done), \
        {name: collections.Counter(o.status for o in done) for name, done in outcomes.items()}
    for sink in ("loki", "elasticsearch"):
        wait_until(f"every request line in {sink}", lambda sink=sink: not logs.missing(expected, sink),
                   DELIVERY_DEADLINE_S, seen=lambda sink=sink: f"{len(logs.missing(expected, sink))} missing")
    wrong_pod = [entry.record["request_id"] for entry in logs.entries
                 if entry.sink == "loki" and entry.record and entry.record.get("request_id") in expected
                 and entry.labels.get("pod") != f"todo-{expected[entry.record['request_id']][-1]}"]
    assert not wrong_pod, f"lines shipped under another pod's label: {wrong_pod[:5]}"
    elasticsearch_ids = collections.Counter(logs.request_ids("elasticsearch"))
    assert all(count == 1 for count in elasticsearch_ids.values()), "a line was indexed twice in Elasticsearch"
    figures["lines_lost"] = len(logs.missing(expected)) + len(logs.missing(expected, "elasticsearch"))
    figures["requests_failed"] = sum(1 for done in outcomes.values() for o in done if o.status != 201)

    # Act: a key used on every replica is revoked.
    victim = apps[0].create_key("mallory")
    sessions = [app.session(victim) for app in apps]
    for app, session in zip(apps, sessions):
        assert session.get(f"{app.api}/todos", timeout=10).status_code == 200
    key_id = next(key["id"] for key in map(json.loads, apps[0].cli("keys", "list", "--json").stdout.splitlines())
                  if key["owner"] == "mallory")
    revoke = apps[0].cli("keys", "revoke", key_id)
    revoked_at = time.monotonic()
    assert revoke.returncode == 0, f"keys revoke failed: {revoke.stderr}"

    # Assert: every replica refuses it within the cache's lifetime.
    def refused(app, session) -> float:
        wait_until(f"{app.service.name} refuses the revoked key",
                   lambda: session.get(f"{app.api}/todos", timeout=10).status_code == 401,
                   KEY_CACHE_TTL_S + 5, interval=0.05)
        return time.monotonic() - revoked_at
    refusals = run_parallel([lambda app=app, session=session: refused(app, session)
                             for app, session in zip(apps, sessions)])
    figures["revoked_key_refused_everywhere_s"] = max(refusals)
    assert max(refusals) <= KEY_CACHE_TTL_S + 0.5, f"seconds until each replica refused the key: {refusals}"

    # Assert: the three scheduled backups made one snapshot.
    def outcome(sidecar) -> str:
        text = sidecar.service.log_path.read_text()
        if "backup published" in text:
            return "published"
        if "skipped a scheduled backup: another backup is running" in text:
            return "skipped"
        return ""
    outcomes_of_backup = wait_until("every sidecar ran its scheduled backup",
                                    lambda: all(outcome(s) for s in sidecars) and [outcome(s) for s in sidecars],
                                    75, seen=lambda: "\n".join(tail(s.service.log_path, 5) for s in sidecars))
    snapshots = sidecars[0].cli("backup", "list", "--json").stdout.splitlines()
    figures["snapshots_from_three_scheduled_backups"] = len(snapshots)
    assert sorted(outcomes_of_backup) == ["published", "skipped", "skipped"], outcomes_of_backup
    assert len(snapshots) == 1, f"snapshots in the store: {snapshots}"

    # Assert: Prometheus sees three pods, each with its own request series.
    wait_until("Prometheus scrapes three pods",
               lambda: prometheus.value('count(up{job="todo-backend"} == 1)') == REPLICAS, 15)
    wait_until("three pods' request series", lambda: prometheus.value(
        'count(count by (pod) (todo_http_requests_total{route="/api/todos"}))') == REPLICAS, 15)

    # Assert: every per-pod panel of the dashboards shows the three pods, with
    # every pod chosen in the dashboard's pod selector (a regex alternation,
    # as Grafana writes a multi-value selection).
    dashboards = repo_root / "dashboards"
    assert dashboard_queries(dashboards), f"no dashboard panel found in {dashboards}"
    pods = [f"todo-{n}" for n in range(REPLICAS)]
    values = grafana_values(prometheus, dashboard_variables(dashboards),
                            {"namespace": Prometheus.NAMESPACE, "job": Prometheus.JOB, "pod": f"({'|'.join(pods)})"})
    per_pod = [q for q in dashboard_queries(dashboards) if "{{pod}}" in q.legend.replace(" ", "")
               or re.search(r"by\s*\([^)]*\bpod\b", q.expr)]
    assert per_pod, "no per-pod panel in the dashboards"

    def pods_shown(query) -> set[str]:
        return {series["metric"].get("pod") for series in prometheus.query(substitute(query.expr, values))}
    short = []

    def every_per_pod_panel_shows_three_pods() -> bool:
        short[:] = [f"{q.dashboard} / {q.panel}: {sorted(p for p in pods_shown(q) if p)}" for q in per_pod
                    if pods_shown(q) != set(pods)]
        return not short
    wait_until("every per-pod panel shows three pods", every_per_pod_panel_shows_three_pods, 20,
               seen=lambda: "\n".join(short))
    figures["per_pod_panels_with_three_series"] = len(per_pod)
