"""Drill 9: bad input at scale, from schemathesis, against the served OpenAPI document.

With a valid token: every check schemathesis has, stateful links on, a
bounded number of examples per operation: no 5xx, no answer outside the
document. With no token, and with another owner's token: only 401 and 404
(no token) or that owner's own todos (another token) — never someone else's
todo, and someone else's todos unchanged.
"""

import json
import os
import pathlib
import subprocess
import sys

import yaml

from drill_harness import create_todo, start_stack

MAX_EXAMPLES = 10
SEED = 12
# Every request the document allows is accepted or refused for a reason it
# states: the cursor is described as what it is (48 hex digits, every one a
# position), so no schema-valid request may get a 400.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "3XX", "401", "403", "404", "409", "429"]
"""


def schemathesis(app, certificate, workdir: pathlib.Path, name: str, token: str | None,
                 checks: str = "all", phases: str = "examples,coverage,fuzzing,stateful") -> tuple[subprocess.CompletedProcess, list[dict]]:
    """One schemathesis run; its exit and the interactions it recorded."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    cassette = workdir / f"{name}.yaml"
    argv = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
            f"https://127.0.0.1:{app.port}/api/openapi.json", "--checks", checks,
            "--phases", phases, "--max-examples", str(MAX_EXAMPLES),
            "--seed", str(SEED), "--workers", "1", "--tls-verify", str(certificate.cert_path),
            "--report", "vcr", "--report-vcr-path", str(cassette)]
    if token is not None:
        argv += ["-H", f"Authorization: Bearer {token}"]
    document = app.session(None).get(f"https://127.0.0.1:{app.port}/api/openapi.json", timeout=10).json()
    title_pattern = document["components"]["schemas"]["CreateTodoRequest"]["properties"]["title"]["pattern"]
    hooks = pathlib.Path(__file__).resolve().parent
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=workdir, env={
        **os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "DRILL_TITLE_PATTERN": title_pattern,
        "PYTHONPATH": f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    interactions = []
    if cassette.exists():
        interactions = yaml.safe_load(cassette.read_text()).get("http_interactions") or []
    return done, interactions


def answers(interactions: list[dict]) -> list[tuple[str, str, int, str]]:
    """(method, uri, status, body) of every recorded exchange."""
    found = []
    for interaction in interactions:
        request, response = interaction.get("request") or {}, interaction.get("response") or {}
        if not response:
            continue
        body = (response.get("body") or {}).get("string") or ""
        found.append((request.get("method"), request.get("uri"), int(response["status"]["code"]), body))
    return found


def test_bad_input_at_scale_gets_no_5xx_no_schema_violation_and_no_other_owners_todo(
        pod, binaries, repo_root, certificate, figures):
    # Arrange: carol has todos nobody else may see; alice and bob have keys.
    stack = start_stack(pod, binaries, repo_root, certificate, with_sidecar=False)
    app = stack.app
    database = stack.database_url.rsplit("/", 1)[1].split("?")[0]
    alice, bob, carol = app.create_key("alice"), app.create_key("bob"), app.create_key("carol")
    carol_session = app.session(carol)
    carol_todos = [create_todo(carol_session, app.api, f"drill-9-{n}", f"carol-secret-{n}").json()
                   for n in range(5)]
    carol_rows_sql = "SELECT id, title, completed, updated_at FROM todos WHERE owner = 'carol' ORDER BY id"
    carol_rows = stack.postgres.psql(carol_rows_sql, database)
    workdir = pod.root / "schemathesis"

    # Act: alice with every check; nobody; bob. (No token creates nothing,
    # so the stateful phase has no links to follow there.)
    valid, valid_seen = schemathesis(app, certificate, workdir, "alice", alice)
    anonymous, anonymous_seen = schemathesis(app, certificate, workdir, "anonymous", None,
                                             checks="not_a_server_error", phases="examples,coverage,fuzzing")
    other, other_seen = schemathesis(app, certificate, workdir, "bob", bob)

    # Assert: with a valid token, schemathesis found nothing.
    figures["requests_valid_token"] = len(valid_seen)
    figures["requests_no_token"] = len(anonymous_seen)
    figures["requests_other_owner"] = len(other_seen)
    assert valid.returncode == 0, f"schemathesis with a valid token failed:\n{valid.stdout[-6000:]}{valid.stderr[-2000:]}"
    assert valid_seen, "schemathesis recorded no request"
    server_errors = [(m, u, s) for m, u, s, _ in answers(valid_seen + anonymous_seen + other_seen) if s >= 500]
    assert not server_errors, f"5xx answers: {server_errors[:5]}"

    # Assert: with no token, the API answered only 401 (and 404 for no such
    # route); the document itself is public.
    assert anonymous.returncode == 0, f"schemathesis with no token failed:\n{anonymous.stdout[-6000:]}"
    anonymous_answers = [(m, u, s) for m, u, s, _ in answers(anonymous_seen)
                         if "/api/openapi.json" not in u]
    unexpected = [(m, u, s) for m, u, s in anonymous_answers if s not in (401, 404)]
    assert anonymous_answers and not unexpected, f"answers without a token other than 401/404: {unexpected[:10]}"

    # Assert: no run ever showed or changed carol's todos, and bob cannot
    # reach them by id either.
    assert other.returncode == 0, f"schemathesis with another owner's token failed:\n{other.stdout[-6000:]}"
    leaks = [(m, u, s) for m, u, s, body in answers(valid_seen + anonymous_seen + other_seen)
             if "carol-secret" in body or any(todo["id"] in body for todo in carol_todos)]
    assert not leaks, f"requests of other owners showed carol's todos: {leaks[:5]}"
    bob_session = app.session(bob)
    for todo in carol_todos:
        url = f"{app.api}/todos/{todo['id']}"
        assert bob_session.get(url, timeout=10).status_code == 404
        assert bob_session.patch(url, json={"completed": True}, timeout=10).status_code == 404
        assert bob_session.delete(url, timeout=10).status_code == 404
    assert stack.postgres.psql(carol_rows_sql, database) == carol_rows
    assert json.dumps(carol_session.get(f"{app.api}/todos?limit=100", timeout=10).json()).count("carol-secret") == 5
