"""Fixtures of the whole-pod drills: the TLS certificate shared by the session,
and the `pod` that owns (and always stops) every process a drill starts."""

import pathlib

import pytest

from drill_harness import Pod, self_signed_certificate


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def pod(request, tmp_path: pathlib.Path):
    """Every process of the drill; stopped at the end whatever happened. A
    failed drill also prints the last lines of every process's log."""
    pod = Pod(tmp_path)
    yield pod
    call = getattr(request.node, "report_call", None)
    if call is None or call.failed:
        print("\n=== what the drill's processes said last ===\n" + pod.report())
    errors = pod.close()
    assert not errors, f"stopping the drill's processes failed: {errors}"


@pytest.fixture
def figures(request):
    """What a drill measured (seconds, counts), printed at the end of the run
    in one table (docs/operations.md holds the last run's)."""
    measured: dict[str, object] = {}
    yield measured
    for name, value in measured.items():
        request.node.user_properties.append((f"figure:{name}", value))


def pytest_terminal_summary(terminalreporter):
    rows = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "teardown":
                continue
            for key, value in getattr(report, "user_properties", []):
                if isinstance(key, str) and key.startswith("figure:"):
                    rows.append((report.nodeid.split("::")[-1], key[len("figure:"):], value))
    if rows:
        terminalreporter.section("drill figures")
        for drill, name, value in sorted(rows):
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            terminalreporter.write_line(f"{drill:70} {name:40} {shown}")
