"""Drill 4: an error burst, and the burn-rate alerts that should and should not page.

The fault is real, not a switch in the product: a trigger on the drill's
database makes one insert in N fail, so todo-app answers those POSTs 500.
First an error rate within the availability SLO's budget for longer
than every alert's window: nothing pages. Then one insert in five fails:
`TodoHighErrorRate` and the fast-burn `TodoErrorBudgetBurn` reach the pager.
Then the fault is cleared and both resolve.
"""

import collections
import time

from drill_harness import Load, create_todo, start_monitoring, start_stack, wait_until

# The drill's availability objective, 99% (a 1% error budget), so that an
# error rate within budget shows some errors in the few hundred requests a
# debug build serves on two shared cores in the quiet phase.
AVAILABILITY_TARGET = 0.99
# One failing insert in this many: 0.5%, half the budget.
WITHIN_BUDGET_EVERY = 200
# One in five: 20%, above TodoHighErrorRate's 5% and 14.4 times the budget.
BURST_EVERY = 5
# Under this time scale TodoHighErrorRate's window and `for:` are 6 s each,
# the fast burn's windows 72 s and 6 s: the quiet phase outlasts them.
TIME_SCALE = 0.02
QUIET_PHASE_S = 20
PAGED_ALERTS = ("TodoHighErrorRate", "TodoErrorBudgetBurn")

FAULT = """
CREATE TABLE drill_fault (fail_every integer NOT NULL);
INSERT INTO drill_fault VALUES (0);
CREATE SEQUENCE drill_fault_inserts;
CREATE FUNCTION drill_fail_some_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE every integer := (SELECT fail_every FROM drill_fault);
BEGIN
  IF every > 0 AND nextval('drill_fault_inserts') % every = 0 THEN
    RAISE EXCEPTION 'drill 4: injected insert failure';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER drill_fail_some_inserts BEFORE INSERT ON todos
  FOR EACH ROW EXECUTE FUNCTION drill_fail_some_inserts();
"""


def test_an_error_burst_pages_through_the_burn_rate_alerts_and_a_trickle_within_budget_does_not(
        pod, binaries, repo_root, certificate, figures):
    # Arrange: a pod under a steady stream of writes, and the fault in place (off).
    stack = start_stack(pod, binaries, repo_root, certificate)
    app, postgres = stack.app, stack.postgres
    database = stack.database_url.rsplit("/", 1)[1].split("?")[0]
    postgres.psql(FAULT, database)
    monitoring = start_monitoring(pod, repo_root, {"todo-0": stack.sidecar.target}, time_scale=TIME_SCALE,
                                  values={"alerting": {"slo": {"availability": {"target": AVAILABILITY_TARGET}}}})
    token = app.create_key("alice")
    load = Load(lambda: app.session(token), lambda s, rid: create_todo(s, app.api, rid, "drill-4"),
                workers=2, pause=0.02).start()
    wait_until("Prometheus sees the traffic", lambda: monitoring.prometheus.value(
        'sum(rate(todo_http_requests_total{route="/api/todos"}[5s]))'), 30, seen=pod.report)

    # Act 1: errors within the budget, for longer than the alerts' windows.
    postgres.psql(f"UPDATE drill_fault SET fail_every = {WITHIN_BUDGET_EVERY}", database)
    quiet_from = time.monotonic()
    wait_until("the quiet phase has lasted", lambda: time.monotonic() - quiet_from >= QUIET_PHASE_S,
               QUIET_PHASE_S + 1)
    quiet = [o for o in list(load.outcomes) if o.started >= quiet_from]
    quiet_notifications = [(n.path, a["labels"]["alertname"]) for n in monitoring.webhook.notifications
                           for a in n.payload.get("alerts", [])]

    # Act 2: one insert in five fails.
    postgres.psql(f"UPDATE drill_fault SET fail_every = {BURST_EVERY}", database)
    burst_at = time.monotonic()
    pages = {name: monitoring.wait_for_notification(name, "firing", 90, since=burst_at) for name in PAGED_ALERTS}

    # Act 3: the fault is cleared.
    postgres.psql("UPDATE drill_fault SET fail_every = 0", database)
    cleared_at = time.monotonic()
    resolved = {name: monitoring.wait_for_notification(name, "resolved", 120, since=cleared_at)
                for name in PAGED_ALERTS}
    outcomes = load.stop()

    # Assert: the trickle paged nobody, the burst paged through the pager
    # route, and both resolved.
    quiet_statuses = collections.Counter(o.status for o in quiet)
    assert quiet_statuses[500] >= 1, f"no error during the quiet phase, so it proves nothing: {quiet_statuses}"
    assert quiet_statuses[500] / len(quiet) < 1 - AVAILABILITY_TARGET, f"the quiet phase was over budget: {quiet_statuses}"
    assert not quiet_notifications, f"notifications during an error rate within budget: {quiet_notifications}"
    for name, notification in pages.items():
        assert monitoring.paged(notification), (
            f"{name} went to {notification.path}, not to a paging receiver {monitoring.pager_receivers}")
    burst = [o for o in outcomes if burst_at <= o.started < cleared_at]
    statuses = collections.Counter(o.status for o in outcomes)
    assert set(statuses) <= {201, 500}, f"answers other than 201 and the injected 500: {statuses}"
    figures.update({
        "quiet_phase_requests_and_errors": f"{len(quiet)} / {quiet_statuses[500]}",
        "burst_error_share": round(sum(1 for o in burst if o.status == 500) / len(burst), 3),
        **{f"burst_to_{name}_page_s": page.at - burst_at for name, page in pages.items()},
        **{f"cleared_to_{name}_resolved_s": done.at - cleared_at for name, done in resolved.items()},
    })
