"""The linters and scanners that users run over the Dockerfile and the GitHub
workflows find nothing: hadolint, zizmor, check-jsonschema with GitHub's
workflow schema, and checkov (frameworks dockerfile and github_actions).
Every skip has its reason in one place per tool: checkov's in .checkov.yaml
(and the few resource-scoped `checkov.io/skipN` annotations of the chart,
each named there too), hadolint's in .hadolint.yaml. All of them work
offline and take seconds."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from suite_support import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
CHECKOV_CONFIG = REPO_ROOT / ".checkov.yaml"
HADOLINT_CONFIG = REPO_ROOT / ".hadolint.yaml"
CHART_TEMPLATES = REPO_ROOT / "helm" / "todo-backend" / "templates"
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
    # The failure threshold (style: everything counts) and the skips are in the config.
    result = run(tool("hadolint"), "--config", str(HADOLINT_CONFIG), str(DOCKERFILE))

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
                 "--config-file", str(CHECKOV_CONFIG), "--skip-download",
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


def listed_skips(path, key: str, pattern: str) -> tuple[list[str], str]:
    """The items of the list `key` of a YAML config file, and its comments."""
    lines = path.read_text().splitlines()
    listed = yaml.safe_load(path.read_text()).get(key) or []
    comments = "\n".join(line for line in lines if line.lstrip().startswith("#"))
    assert all(re.fullmatch(pattern, item) for item in listed), listed
    return listed, comments


def unexplained(skips: list[str], comments: str) -> list[str]:
    """Skips whose id no comment line names together with a reason."""
    return [skip for skip in skips
            if not re.search(rf"\b{skip}\b[^\n]*\([^)]+\)[^\n]*:", comments)
            and not re.search(rf"\b{skip}\b \([^)]+\):", comments)]


def test_every_checkov_skip_says_why():
    skipped, comments = listed_skips(CHECKOV_CONFIG, "skip-check", r"CKV2?_[A-Z0-9_]+")

    assert skipped, "the skips are a list under skip-check"
    assert not unexplained(skipped, comments), f"checkov skips without a reason: {unexplained(skipped, comments)}"


def test_every_resource_scoped_checkov_skip_has_a_reason_and_is_named_in_the_config():
    annotations = [
        (path.name, check, reason)
        for path in sorted(CHART_TEMPLATES.rglob("*.yaml"))
        for check, reason in re.findall(r"checkov\.io/skip\d+:\s*(CKV2?_[A-Z0-9_]+)=?(.*)", path.read_text())
    ]
    _, comments = listed_skips(CHECKOV_CONFIG, "skip-check", r"CKV2?_[A-Z0-9_]+")

    assert annotations, "the helm test pod's probe checks are skipped by annotation"
    for name, check, reason in annotations:
        assert len(reason.strip()) > 20, f"{name}: checkov.io skip of {check} without a reason"
        assert re.search(rf"\b{check}\b", comments) and name in comments, (
            f"{name} skips {check}: name it (and the file) in .checkov.yaml")


def test_every_hadolint_skip_is_in_its_config_with_a_reason():
    ignored, comments = listed_skips(HADOLINT_CONFIG, "ignored", r"(DL|SC)\d+")
    inline = [line for line in DOCKERFILE.read_text().splitlines() if "hadolint ignore" in line]

    assert ignored, "the skips are a list under ignored"
    assert not unexplained(ignored, comments), f"hadolint skips without a reason: {unexplained(ignored, comments)}"
    assert not inline, f"inline hadolint skips, outside .hadolint.yaml: {inline}"
    assert ".hadolint.yaml" in CHECKOV_CONFIG.read_text() and ".checkov.yaml" in HADOLINT_CONFIG.read_text(), (
        "each tool's config names where the other's skips are")
