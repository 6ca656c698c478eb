"""Drills 2 and 3: the database stopped, then frozen, under a running pod.

What an API consumer and the kubelet see: 503s answered fast instead of
hangs, readiness failing while the database is away, and the service back
without a restart once the database is.
"""

import collections
import time

from drill_harness import Load, create_todo, start_monitoring, start_stack, wait_until

# Drill 3's database settings: small enough for CI, in the same proportions
# as the defaults (the statement timeout well above the queue timeout).
QUEUE_TIMEOUT_MS = 500
STATEMENT_TIMEOUT_MS = 2000
# The worst case docs/configuration.md documents: queue_timeout + statement_timeout
# + 0.5 s, plus statement_timeout + 0.5 s more for a read retried on a fresh connection.
ANSWER_DEADLINE_S = (QUEUE_TIMEOUT_MS + 2 * (STATEMENT_TIMEOUT_MS + 500)) / 1000
FREEZE_SECONDS = ANSWER_DEADLINE_S + 2
# The alerts a database outage makes true as a consequence, which the
# shipped Alertmanager configuration inhibits while TodoDatabaseUnavailable fires.
ERROR_ALERTS = {"TodoHighErrorRate", "TodoErrorBudgetBurn"}


def statuses_of(outcomes) -> collections.Counter:
    return collections.Counter(outcome.status for outcome in outcomes)


def test_a_stopped_database_gets_503_fast_pages_and_the_app_recovers_without_a_restart(
        pod, binaries, repo_root, certificate, figures):
    # Arrange: a pod under steady reads, watched by Prometheus and Alertmanager.
    stack = start_stack(pod, binaries, repo_root, certificate)
    app = stack.app
    monitoring = start_monitoring(pod, repo_root, {"todo-0": stack.sidecar.target})
    token = app.create_key("alice")
    session = app.session(token)
    assert create_todo(session, app.api, "drill-2-before").status_code == 201
    load = Load(lambda: app.session(token),
                lambda s, rid: s.get(f"{app.api}/todos", headers={"X-Request-Id": rid}, timeout=20),
                workers=2, pause=0.1).start()
    wait_until("Prometheus sees the traffic", lambda: monitoring.prometheus.value(
        'sum(rate(todo_http_requests_total{route="/api/todos"}[5s]))'), 30, seen=pod.report)

    # Act: PostgreSQL stops (a managed database's failover, a crash).
    fault_at = time.monotonic()
    stack.postgres.stop()
    wait_until("readiness turns 503 while the database is down", lambda: app.ready_status() == 503, 10,
               seen=pod.report)
    unready_at = time.monotonic()
    figures["fault_to_unready_s"] = unready_at - fault_at
    page = monitoring.wait_for_notification("TodoDatabaseUnavailable", "firing", 60, since=fault_at)
    figures["fault_to_page_s"] = page.at - fault_at
    # The 503s make the error-rate alerts true too; they must reach nobody
    # while the database alert explains them.
    wait_until("TodoHighErrorRate is firing in Prometheus (to be inhibited)",
               lambda: "TodoHighErrorRate" in monitoring.firing_now(), 60,
               seen=lambda: monitoring.describe("TodoHighErrorRate"))
    wait_until("Alertmanager has TodoHighErrorRate, inhibited", lambda: all(
        alert["status"]["inhibitedBy"] for alert in monitoring.alertmanager.alerts()
        if alert["labels"]["alertname"] in ERROR_ALERTS) and any(
        alert["labels"]["alertname"] == "TodoHighErrorRate" for alert in monitoring.alertmanager.alerts()), 15,
        seen=lambda: monitoring.describe("TodoHighErrorRate"))

    # Act: PostgreSQL is back. It accepts connections before `pg_ctl start`
    # returns (pg_ctl polls for that), so the outage ends when the start
    # begins: a request answered 200 between the two is not an outage answer.
    restart_at = time.monotonic()
    stack.postgres.start()
    back_at = time.monotonic()
    wait_until("the API serves again without a restart",
               lambda: session.get(f"{app.api}/todos", timeout=5).status_code == 200, 30, seen=pod.report)
    figures["database_back_to_first_2xx_s"] = time.monotonic() - back_at
    wait_until("readiness returns", lambda: app.ready_status() == 200, 15, seen=pod.report)
    figures["database_back_to_ready_s"] = time.monotonic() - back_at
    resolved = monitoring.wait_for_notification("TodoDatabaseUnavailable", "resolved", 90, since=back_at)
    figures["database_back_to_resolved_s"] = resolved.at - back_at
    outcomes = load.stop()

    # Assert: every request sent while the database was known to be down was
    # answered 503 (none hung, none got another status); nothing else failed;
    # the same process serves again; no error alert reached anyone.
    outage = [o for o in outcomes if o.started >= unready_at and o.started + o.seconds <= restart_at]
    others = [o for o in outcomes if o not in outage]
    assert outage, "no request was sent during the outage"
    assert statuses_of(outage) == {503: len(outage)}, f"answers while the database was down: {statuses_of(outage)}"
    assert set(statuses_of(others)) <= {200, 503}, f"answers around the outage: {statuses_of(others)}"
    assert app.service.running(), "todo-app exited instead of recovering"
    assert create_todo(session, app.api, "drill-2-after").status_code == 201
    paged = monitoring.webhook.alertnames("firing")
    assert not paged & ERROR_ALERTS, f"error alerts reached a receiver despite the inhibition: {paged}"
    slowest = max(outcome.seconds for outcome in outage)
    figures["slowest_503_s"] = slowest
    figures["requests_failed_during_outage"] = len(outage)
    # Issue 14: a database refusing connections is answered 503 at once (the
    # crate test holds it to 100 ms; the drill allows for its own client).
    assert slowest < 1.0, f"a request waited {slowest:.2f} s for its 503 while the database was down"


def test_a_frozen_database_gets_503_within_the_answer_deadline_and_everything_recovers(
        pod, binaries, repo_root, certificate, figures):
    # Arrange: a pod with short database timeouts, serving one owner.
    stack = start_stack(pod, binaries, repo_root, certificate, app_env={
        "APP__DATABASE__QUEUE_TIMEOUT_MS": str(QUEUE_TIMEOUT_MS),
        "APP__DATABASE__STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
    })
    app = stack.app
    token = app.create_key("alice")
    session = app.session(token)
    assert create_todo(session, app.api, "drill-3-before").status_code == 201

    # Act: every PostgreSQL process stopped (a host frozen, a storage stall)
    # while reads and writes keep coming on keep-alive connections.
    stack.postgres.freeze()
    frozen_at = time.monotonic()
    load = Load(lambda: app.session(token),
                lambda s, rid: (create_todo(s, app.api, rid, "drill-3") if int(rid[-1], 16) % 2
                                else s.get(f"{app.api}/todos", headers={"X-Request-Id": rid}, timeout=20)),
                workers=4, pause=0.05).start()
    wait_until("readiness turns 503 while the database is frozen", lambda: app.ready_status() == 503, 10,
               seen=pod.report)
    figures["freeze_to_unready_s"] = time.monotonic() - frozen_at
    wait_until("the freeze has lasted past the answer deadline",
               lambda: time.monotonic() - frozen_at >= FREEZE_SECONDS, FREEZE_SECONDS + 1)
    load.stopping.set()
    stack.postgres.thaw()
    thawed_at = time.monotonic()
    during = load.join(60)
    wait_until("the API serves again", lambda: session.get(f"{app.api}/todos", timeout=5).status_code == 200,
               30, seen=pod.report)
    figures["thaw_to_first_2xx_s"] = time.monotonic() - thawed_at
    wait_until("readiness returns", lambda: app.ready_status() == 200, 15, seen=pod.report)
    figures["thaw_to_ready_s"] = time.monotonic() - thawed_at

    # Assert: every request was answered (none hung past the deadline), with
    # a 503 unless it got through before the freeze.
    statuses = statuses_of(during)
    unanswered = [o for o in during if o.status is None]
    assert not unanswered, f"{len(unanswered)} requests got no answer: {unanswered[:3]}"
    assert set(statuses) <= {200, 201, 503}, f"answers while the database was frozen: {statuses}"
    assert statuses[503] > 0, f"no 503 while the database was frozen: {statuses}"
    slowest = max(outcome.seconds for outcome in during)
    figures["slowest_answer_s"] = slowest
    figures["requests_failed_during_freeze"] = statuses[503]
    assert slowest <= ANSWER_DEADLINE_S + 1.0, (
        f"a request took {slowest:.2f} s, past the documented answer deadline of {ANSWER_DEADLINE_S} s")
    assert app.service.running(), "todo-app exited instead of recovering"
    # Issue 14's promise: a request not yet started gets 503 within
    # queue_timeout_ms, a running one within the statement timeout plus a
    # small margin (0.5 s), since a frozen server cannot enforce its own.
    assert slowest <= STATEMENT_TIMEOUT_MS / 1000 + 1.0, (
        f"a frozen database held a request {slowest:.2f} s, over {STATEMENT_TIMEOUT_MS / 1000 + 1.0} s")
