"""Drill 7: a graceful rollout, as Kubernetes deletes a pod.

The order a pod's deletion follows: SIGTERM to todo-app (readiness turns 503
so the endpoints controller takes the pod out of the Service, the listener
closes after `server.shutdown_readiness_delay_seconds`, in-flight requests
finish), then SIGTERM to the sidecar (a native sidecar stops after the app),
then the emptyDir holding the log file is deleted. No accepted request may
fail, and every request's log line must have reached the log store.
"""

import collections
import shutil
import signal
import time


from drill_harness import Load, create_todo, start_stack, wait_until

READINESS_DELAY_S = 2
# How long the Service keeps routing to a pod after its readiness failed
# (endpoints controller, kube-proxy): less than the readiness delay.
ROUTING_LAG_S = 1
# Kubernetes' default terminationGracePeriodSeconds.
GRACE_PERIOD_S = 30


def test_a_deleted_pod_fails_no_accepted_request_and_loses_no_log_line(
        pod, binaries, repo_root, certificate, figures):
    # Arrange: a pod under load on keep-alive connections; a "load balancer"
    # that sends requests only while readiness says 200.
    stack = start_stack(pod, binaries, repo_root, certificate, app_env={
        "APP__SERVER__SHUTDOWN_READINESS_DELAY_SECONDS": str(READINESS_DELAY_S),
    })
    app, sidecar, logs = stack.app, stack.sidecar, stack.logs
    token = app.create_key("alice")
    load = Load(lambda: app.session(token), lambda s, rid: create_todo(s, app.api, rid, "drill-7"),
                workers=4, pause=0.01).start()
    wait_until("the load is under way", lambda: len(load.outcomes) >= 100, 30, seen=pod.report)

    # Act: SIGTERM to the app; the load balancer stops routing once it sees
    # readiness fail, as the endpoints controller does.
    term_at = time.monotonic()
    app.service.signal(signal.SIGTERM)
    wait_until("readiness turns 503 after SIGTERM", lambda: app.ready_status() == 503, 5, interval=0.02,
               seen=pod.report)
    unready_after = time.monotonic() - term_at
    # The listener must still serve now: readiness turned first.
    still_serving = create_todo(app.session(token), app.api, "drill-7-after-unready").status_code
    wait_until("the load balancer has caught up", lambda: time.monotonic() - term_at >= unready_after + ROUTING_LAG_S,
               ROUTING_LAG_S + 1)
    outcomes = load.stop()
    exit_code = app.service.wait(GRACE_PERIOD_S)
    exited_after = time.monotonic() - term_at

    # Act: then SIGTERM to the sidecar, then the emptyDir goes.
    sidecar_term_at = time.monotonic()
    sidecar.service.signal(signal.SIGTERM)
    sidecar_exit = sidecar.service.wait(GRACE_PERIOD_S)
    sidecar_exited_after = time.monotonic() - sidecar_term_at
    shutil.rmtree(app.log_dir)

    # Assert
    statuses = collections.Counter(o.status for o in outcomes)
    failed = [o for o in outcomes if o.status != 201]
    answered = [o.request_id for o in outcomes if o.status is not None]
    lost = logs.missing(answered)
    figures.update({
        "sigterm_to_unready_s": unready_after,
        "sigterm_to_app_exit_s": exited_after,
        "sidecar_sigterm_to_exit_s": sidecar_exited_after,
        "requests": len(outcomes),
        "requests_failed": len(failed),
        "lines_lost": len(lost),
        "lines_duplicated": len(logs.request_ids()) - len(set(logs.request_ids())),
    })
    assert still_serving == 201, f"the API refused a request right after readiness turned 503: {still_serving}"
    assert not failed, f"{len(failed)} of {len(outcomes)} accepted requests failed: {statuses}, e.g. {failed[:3]}"
    assert exit_code == 0, f"todo-app exited {exit_code} on SIGTERM"
    assert exited_after < GRACE_PERIOD_S
    assert sidecar_exit == 0, f"todo-sidecar exited {sidecar_exit} on SIGTERM"
    assert not lost, (f"{len(lost)} of {len(answered)} request lines never reached the receiver "
                      f"(the sidecar drains log shipping on SIGTERM), e.g. {sorted(lost)[:3]}")
