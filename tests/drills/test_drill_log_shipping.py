"""Drill 5: log shipping through a log store outage, a rotation and a crash.

The receiver is down for OUTAGE_S while the app is under traffic and its log
file rotates (a small `log.max_bytes`); once it is back, every request's line
must arrive (at least once: duplicates are counted, not failed). Then the
sidecar is killed with SIGKILL while a batch is in flight and restarted: still
no line missing.
"""

import collections
import time

from drill_harness import Load, create_todo, start_monitoring, start_stack, wait_until

OUTAGE_S = 30
LOG_MAX_BYTES = 65536
# Enough rotated files that the outage's lines stay on disk: the drill's
# traffic writes about 750 KiB a minute, 20 files hold 1.3 MiB.
LOG_MAX_FILES = 20
DELIVERY_DEADLINE_S = 60
# TodoLogShippingLagging's threshold for the drill, and a time scale under
# which its `for: 10m` (and its deriv window) is 9 s, well within the outage.
LAG_ALERT_BYTES = 4096
TIME_SCALE = 0.015


def test_a_log_store_outage_and_a_sidecar_crash_lose_no_line(pod, binaries, repo_root, certificate, figures):
    # Arrange: a pod with a small log file, under steady traffic.
    stack = start_stack(pod, binaries, repo_root, certificate,
                        app_env={"APP__LOG__MAX_BYTES": str(LOG_MAX_BYTES),
                                 "APP__LOG__MAX_FILES": str(LOG_MAX_FILES)},
                        sidecar_env={"SIDECAR__LOGSHIP__MAX_ROTATED_FILES": str(LOG_MAX_FILES)})
    app, logs = stack.app, stack.logs
    monitoring = start_monitoring(pod, repo_root, {"todo-0": stack.sidecar.target}, time_scale=TIME_SCALE,
                                  values={"alerting": {"logship": {"lagBytes": LAG_ALERT_BYTES}}})
    token = app.create_key("alice")
    load = Load(lambda: app.session(token), lambda s, rid: create_todo(s, app.api, rid, "drill-5"),
                workers=2, pause=0.05).start()
    wait_until("the load is under way", lambda: len(load.outcomes) >= 20, 30, seen=pod.report)

    # Act 1: the log store goes away for OUTAGE_S while the app writes and rotates.
    logs.stop()
    down_at = time.monotonic()
    rotated = app.log_dir / "app.log.1"
    wait_until("the app's log file rotated during the outage", rotated.exists, OUTAGE_S, seen=pod.report)
    wait_until("the outage has lasted its time", lambda: time.monotonic() - down_at >= OUTAGE_S, OUTAGE_S + 1)
    lag_read_at = time.monotonic()
    lag_during_outage = stack.sidecar.metric("todo_logship_lag_bytes")
    lagging = [n for n, _ in monitoring.webhook.alerts("TodoLogShippingLagging", "firing") if n.at >= down_at]
    lagging_state = monitoring.describe("TodoLogShippingLagging")
    logs.start()
    back_at = time.monotonic()
    answered = lambda: [o.request_id for o in list(load.outcomes) if o.status is not None]
    wait_until("every request line of the outage arrived after the log store returned",
               lambda: not logs.missing(answered()), DELIVERY_DEADLINE_S,
               seen=lambda: f"{len(logs.missing(answered()))} lines missing\n{pod.report()}")
    figures["log_store_back_to_all_lines_s"] = time.monotonic() - back_at
    if lagging:
        figures["outage_to_TodoLogShippingLagging_s"] = lagging[0].at - down_at
        resolved = monitoring.wait_for_notification("TodoLogShippingLagging", "resolved", 60, since=back_at)
        figures["log_store_back_to_TodoLogShippingLagging_resolved_s"] = resolved.at - back_at
    rotations = len(list(app.log_dir.glob("app.log.*")))

    # Act 2: SIGKILL to the sidecar while a batch is in flight, then a restart.
    logs.delay_seconds = 1.0
    wait_until("a batch is in flight", lambda: logs.pushes_in_flight > 0, 10, interval=0.01, seen=pod.report)
    stack.sidecar.service.kill9()
    logs.delay_seconds = 0.0
    restarted_at = time.monotonic()
    stack.sidecar.restart()
    wait_until("the restarted sidecar ships lines of requests made after it started", lambda: set(
        o.request_id for o in list(load.outcomes) if o.started > restarted_at) & set(logs.request_ids()), 30,
        seen=pod.report)
    outcomes = load.stop()
    expected = [o.request_id for o in outcomes if o.status is not None]
    wait_until("every request line arrived after the sidecar's crash and restart",
               lambda: not logs.missing(expected), DELIVERY_DEADLINE_S,
               seen=lambda: f"{len(logs.missing(expected))} lines missing\n{pod.report()}")
    # Duplicates are counted once the restarted sidecar has acknowledged
    # everything, the batch the crash interrupted included.
    wait_until("the restarted sidecar has caught up", lambda: stack.sidecar.metric("todo_logship_lag_bytes") == 0,
               DELIVERY_DEADLINE_S, seen=pod.report)

    # Assert: nothing missing; duplicates (at most a batch per crash) reported.
    received = collections.Counter(logs.request_ids())
    duplicated = sum(count - 1 for count in received.values() if count > 1)
    figures.update({
        "requests": len(outcomes),
        "requests_failed": sum(1 for o in outcomes if o.status != 201),
        "log_files_rotated": rotations,
        "lag_bytes_during_outage": lag_during_outage,
        "lines_lost": len(logs.missing(expected)),
        "lines_duplicated": duplicated,
    })
    assert rotations >= 1, "the log file never rotated: the drill did not test shipping across a rotation"
    assert not logs.missing(expected)
    assert all(o.status == 201 for o in outcomes), collections.Counter(o.status for o in outcomes)
    # The lag is what tells an operator that lines wait on disk: at the end
    # of the outage it covers at least the request lines written during it
    # (up to a second before it was read: it is refreshed every poll).
    written = logs.line_bytes({o.request_id for o in outcomes if o.status is not None and down_at <= o.started
                               and o.started + o.seconds < lag_read_at - 1})
    figures["request_line_bytes_written_during_outage"] = written
    assert lag_during_outage and lag_during_outage >= written, (
        f"todo_logship_lag_bytes was {lag_during_outage} at the end of the outage, though the app had written "
        f"{written} bytes of request lines during it")
    assert lagging, f"TodoLogShippingLagging did not fire during the outage: {lagging_state}"
