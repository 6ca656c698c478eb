"""The linters and scanners that users run over the Dockerfile and the GitHub
workflows find nothing: hadolint, zizmor, check-jsonschema with GitHub's
workflow schema, and checkov (frameworks dockerfile and github_actions).
Every checkov skip is in the repository's one .checkov.yaml, with its reason.
All of them work offline and take seconds."""

import json
import re
import shutil
import subprocess

import pytest

from suite_support import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (scripts/test.sh installs tests/requirements.txt)")
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
                          check=False)


def test_the_workflows_exist():
    assert [path.name for path in WORKFLOWS] == ["ci.yml", "release.yml"]


def test_hadolint_finds_nothing_in_the_dockerfile():
    result = run(tool("hadolint"), "--failure-threshold", "style", str(DOCKERFILE))

    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_in_the_workflows():
    # --offline: no GitHub API (the online audits need a token and the network).
    result = run(tool("zizmor"), "--offline", "--no-progress", "--format", "plain",
                 *map(str, WORKFLOWS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_the_workflows_match_githubs_workflow_schema():
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                 *map(str, WORKFLOWS))

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("framework", "target"), [
    ("dockerfile", ["--file", str(DOCKERFILE)]),
    ("github_actions", ["--directory", str(REPO_ROOT / ".github" / "workflows")]),
])
def test_checkov_finds_nothing(framework, target):
    result = run(tool("checkov"), *target, "--framework", framework,
                 "--config-file", str(REPO_ROOT / ".checkov.yaml"), "--skip-download",
                 "--quiet", "--compact", "--output", "json")

    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert any(report.get("check_type") == framework for report in reports), result.stdout[:2000]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}:{check['file_line_range']})"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)


def test_every_checkov_skip_says_why():
    lines = (REPO_ROOT / ".checkov.yaml").read_text().splitlines()
    skipped = [match.group(1) for line in lines
               if (match := re.fullmatch(r"\s*-\s*(CKV2?_[A-Z0-9_]+)\s*", line))]
    comments = "\n".join(line for line in lines if line.lstrip().startswith("#"))

    assert skipped, "the skips are a list under skip-check"
    unexplained = [check for check in skipped if not re.search(rf"\b{check}\b", comments)]
    assert not unexplained, f"skips without a reason in a comment: {unexplained}"
