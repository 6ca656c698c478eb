"""docs/runbooks.md has one section per alert at the anchor its runbook_url
names, each saying what the on-call engineer needs, and its links into the
other docs land on headings that exist."""

from __future__ import annotations

import re

import pytest
import yaml

from render_rules import REPO_ROOT

RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
PARTS = ["**What it means for users.**", "**Look first.**", "**Likely causes and fixes.**",
         "**Verify.**", "**Escalate**"]
BACKUP_ALERTS = {"TodoBackupTooOld", "TodoBackupNeverSucceeded", "TodoBackupFailing", "TodoRestoreDrillTooOld",
                 "TodoBackupJobFailed", "TodoBackupCronJobTooOld", "TodoRestoreDrillCronJobTooOld"}


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def sections(path) -> dict[str, str]:
    """anchor → the text under that heading (any level), up to the next heading."""
    found, anchor, lines = {}, None, []
    for line in path.read_text().splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if heading:
            if anchor is not None:
                found[anchor] = "\n".join(lines)
            anchor, lines = slug(heading.group(1)), []
        else:
            lines.append(line)
    if anchor is not None:
        found[anchor] = "\n".join(lines)
    return found


@pytest.fixture(scope="module")
def alerts(rendered_rules) -> dict[str, str]:
    """alert name → runbook_url."""
    return {rule["alert"]: rule["annotations"]["runbook_url"]
            for group in yaml.safe_load(rendered_rules.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


def test_every_alert_has_its_section_at_the_anchor_it_links(alerts):
    runbook = sections(RUNBOOKS)

    for name, url in alerts.items():
        anchor = url.split("#", 1)[1]
        assert url.split("#", 1)[0].endswith("docs/runbooks.md"), name
        assert anchor in runbook, f"{name}: no heading for #{anchor} in docs/runbooks.md"
        for part in PARTS:
            assert part in runbook[anchor], f"{name}: its section lacks {part}"


@pytest.fixture(scope="module")
def backup_alerts(rendered_rules) -> set[str]:
    """The alerts of the todo-backups group: every alert on backups, new ones included."""
    found = {rule["alert"] for group in yaml.safe_load(rendered_rules.read_text())["groups"]
             if group["name"] == "todo-backups" for rule in group["rules"] if "alert" in rule}
    assert BACKUP_ALERTS <= found, "a backup alert left the todo-backups group"
    return found


def test_the_backup_alerts_link_the_restore_procedure(backup_alerts):
    runbook = sections(RUNBOOKS)
    # The anchor is the restore procedure itself, not any heading of backups.md.
    assert "todo-sidecar backup restore" in sections(REPO_ROOT / "docs" / "backups.md")["restore"]

    for name in backup_alerts:
        assert "](backups.md#restore)" in runbook[name.lower()], f"{name}: link the restore procedure"


def test_links_into_the_other_docs_land_on_existing_headings():
    text = RUNBOOKS.read_text()
    links = re.findall(r"\]\(([a-z]+\.md)#([^)]+)\)", text)

    assert links
    for document, anchor in links:
        assert anchor in sections(REPO_ROOT / "docs" / document), f"{document}#{anchor}"
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in sections(RUNBOOKS), f"#{anchor}"


def test_the_other_docs_point_to_the_runbooks():
    for document in ("backups.md", "logship.md", "aggregation.md"):
        assert "runbooks.md" in (REPO_ROOT / "docs" / document).read_text(), document


# ---------------------------------------------------------------------------
# What the on-call engineer runs: exact, and runnable where it runs.

COMMAND_STARTS = ("kubectl", "curl", "todo-", "helm", "sh ", "psql", "SELECT", "ALTER", "NS=", "RESTORE_TARGET_URL")
METRIC = re.compile(r"(?<![\w./$-])(todo_[a-z0-9_]+|todo:[a-z0-9_:]+|kube_[a-z0-9_]+|up)\b")
# What each image has (Dockerfile: Debian slim, so a shell and coreutils, plus
# the program; the sidecar's postgresql-client adds psql). No curl, no wget.
IMAGE_COMMANDS = {
    "todo-app": {"todo-app", "sh", "ls", "cat", "tail", "df"},
    "todo-sidecar": {"todo-sidecar", "sh", "ls", "cat", "tail", "df", "psql"},
}
PLACEHOLDERS = {"$NS": "prod", "$REL": "todo-todo-backend", "$SOURCE": "app"}


def code(text: str) -> list[str]:
    """The inline code spans and the lines of the fenced blocks of `text`."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        found.extend(line.strip() for line in block.splitlines() if line.strip())
    found.extend(span.strip() for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)))
    return found


def is_promql(span: str) -> bool:
    return not span.startswith(COMMAND_STARTS) and bool(METRIC.search(span)) and ("{" in span or "(" in span)


def runnable(span: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        span = span.replace(placeholder, value)
    return re.sub(r"<[^>]+>", "x", span)


def look_first(section: str) -> str:
    return section.split("**Look first.**", 1)[1].split("**Likely causes and fixes.**", 1)[0]


def test_every_section_starts_with_at_least_three_steps_and_a_promql_query(alerts):
    runbook = sections(RUNBOOKS)

    for name, url in alerts.items():
        steps = look_first(runbook[url.split("#", 1)[1]])
        items = re.findall(r"^\s*(?:\d+\.|[-*]) ", steps, flags=re.M)
        assert len(items) >= 3, f"{name}: 'Look first' has {len(items)} steps, not three"
        assert any(is_promql(span) for span in code(steps)), f"{name}: 'Look first' has no PromQL query"


def test_the_runbooks_promql_parses_in_prometheus(prometheus):
    from test_promql import parse_error

    queries = [span for span in code(RUNBOOKS.read_text()) if is_promql(span)]

    failures = [f"{query}: {error}" for query in queries
                if (error := parse_error(prometheus, runnable(query))) is not None]

    assert len(queries) > 30
    assert not failures, "\n".join(failures)


def exec_commands() -> list[tuple[str, str, str]]:
    """(span, container, command) of every `kubectl ... exec ... -- command` of the runbooks."""
    found = []
    for span in code(RUNBOOKS.read_text()):
        match = re.search(r"\bkubectl\b.*?\bexec\b(.*?)\s--\s+(.*)", span)
        if match:
            container = re.search(r"(?:^|\s)-c\s+(\S+)", match.group(1))
            found.append((span, container.group(1) if container else "", match.group(2)))
    return found


def test_what_runs_in_a_container_exists_in_its_image():
    commands = exec_commands()

    assert len(commands) >= 10
    for span, container, command in commands:
        assert container in IMAGE_COMMANDS, f"name the container (-c todo-app or -c todo-sidecar): {span}"
        program = command.split()[0]
        assert program in IMAGE_COMMANDS[container], f"{program} is not in the {container} image: {span}"
        inner = re.match(r"sh -c ['\"](\S+)", command)
        if inner:
            assert inner.group(1) in IMAGE_COMMANDS[container], f"{inner.group(1)} is not in the {container} image: {span}"


def program_invocations() -> set[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(program, subcommands, flags) of every todo-app / todo-sidecar command
    the runbooks run (in a container or as a code span of its own)."""
    found = set()
    for span in code(RUNBOOKS.read_text()):
        for match in re.finditer(r"(?:^|--\s+|\|\s*)(todo-(?:sidecar|app))((?:\s+[a-z][a-z-]*)*)((?:\s+--[a-z-]+)*)", span):
            found.add((match.group(1), tuple(match.group(2).split()), tuple(match.group(3).split())))
    return found


def test_the_todo_app_and_todo_sidecar_commands_exist(binaries):
    import subprocess

    invocations = program_invocations()

    assert any(program == "todo-sidecar" for program, _, _ in invocations)
    for program, subcommands, flags in invocations:
        result = subprocess.run([str(binaries / program), *subcommands, "--help"], capture_output=True, text=True)
        command = " ".join((program, *subcommands, *flags))
        assert result.returncode == 0, f"{command}: {result.stderr}"
        for flag in flags:
            assert flag in result.stdout, f"{command}: no {flag} in its --help"
