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


def test_the_backup_alerts_link_the_restore_procedure(alerts):
    runbook = sections(RUNBOOKS)

    for name in BACKUP_ALERTS & set(alerts):
        assert "](backups.md#restore)" in runbook[name.lower()] or "backups.md#" in runbook[name.lower()], name
    for name in {"TodoBackupTooOld", "TodoBackupNeverSucceeded", "TodoRestoreDrillTooOld"}:
        assert "](backups.md#restore)" in runbook[name.lower()], name


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
