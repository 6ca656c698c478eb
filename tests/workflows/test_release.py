"""The release workflow's own checks, run as they are written in
release.yml (each step's `run` script, under bash as GitHub runs it) against
copies of the repository's files: the version job refuses a tag that the
crates, the chart's appVersion, values-production.yaml's image tags or
CHANGELOG.md do not name, and the deploy job refuses to start without the
production values of its environment. Also: the versions in the repository
agree with each other today, so a release tag can pass."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from suite_support import REPO_ROOT

RELEASE_WORKFLOW = REPO_ROOT / ".github" / "workflows" / "release.yml"
CHART_DIR = REPO_ROOT / "helm" / "todo-backend"
CRATE_MANIFESTS = ["app/Cargo.toml", "common/Cargo.toml", "sidecar/Cargo.toml"]
# What the version job reads.
VERSION_INPUTS = [*CRATE_MANIFESTS, "helm/todo-backend/Chart.yaml",
                  "helm/todo-backend/values-production.yaml", "CHANGELOG.md"]


def step_script(job: str, name_prefix: str) -> str:
    workflow = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    steps = [s for s in workflow["jobs"][job]["steps"] if s.get("name", "").startswith(name_prefix)]
    assert len(steps) == 1, f"one step of job {job} named {name_prefix!r}"
    return steps[0]["run"]


def run_step(script: str, cwd: pathlib.Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The script as GitHub runs a `run:` step: bash -e with pipefail."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd, env={"PATH": os.environ["PATH"], **env},
        capture_output=True, text=True, timeout=60, check=False,
    )


def crate_version(manifest: str) -> str:
    text = (REPO_ROOT / manifest).read_text()
    return re.search(r'^version = "(.*)"$', text, re.MULTILINE).group(1)


def released_changelog(version: str) -> str:
    """CHANGELOG.md as it is once [Unreleased] is renamed for `version`."""
    text = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert "\n## [Unreleased]\n" in text
    return text.replace("\n## [Unreleased]\n", f"\n## [Unreleased]\n\n## [{version}] - 2026-12-01\n", 1)


@pytest.fixture
def release_tree(tmp_path):
    """A copy of what the version job reads, with the changelog section of
    the current version in place (as before a tag)."""
    for relative in VERSION_INPUTS:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / relative, target)
    version = crate_version("app/Cargo.toml")
    (tmp_path / "CHANGELOG.md").write_text(released_changelog(version))
    return tmp_path, version


def run_version_job(tree: pathlib.Path, tag: str) -> subprocess.CompletedProcess:
    output = tree / "github-output"
    output.write_text("")
    return run_step(step_script("version", "The tag, the crates"), tree,
                    {"TAG": tag, "GITHUB_OUTPUT": str(output)})


def test_the_crates_the_chart_and_the_production_values_name_one_version():
    versions = {manifest: crate_version(manifest) for manifest in CRATE_MANIFESTS}
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    production = yaml.safe_load((CHART_DIR / "values-production.yaml").read_text())

    assert len(set(versions.values())) == 1, versions
    version = versions["app/Cargo.toml"]
    assert chart["appVersion"] == version
    assert production["image"]["app"]["tag"] == chart["appVersion"]
    assert production["image"]["sidecar"]["tag"] == chart["appVersion"]


def test_the_version_job_accepts_a_tag_that_everything_names_and_extracts_its_notes(release_tree):
    tree, version = release_tree

    result = run_version_job(tree, f"v{version}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tree / "github-output").read_text() == f"version={version}\n"
    notes = (tree / "release-notes.md").read_text()
    unreleased = (REPO_ROOT / "CHANGELOG.md").read_text().split("\n## [Unreleased]\n", 1)[1]
    assert notes.strip() == unreleased.strip(), "the notes are the version's section, whole"


@pytest.mark.parametrize(("file", "old", "new", "message"), [
    ("sidecar/Cargo.toml", 'version = "{v}"', 'version = "9.9.9"', "sidecar/Cargo.toml says 9.9.9"),
    ("helm/todo-backend/Chart.yaml", 'appVersion: "{v}"', 'appVersion: "9.9.9"', "appVersion is 9.9.9"),
    ("helm/todo-backend/values-production.yaml", 'repository: ghcr.io/todo-backend/todo-sidecar\n    tag: "{v}"',
     'repository: ghcr.io/todo-backend/todo-sidecar\n    tag: "9.9.9"', "image.sidecar.tag is 9.9.9"),
    ("helm/todo-backend/values-production.yaml", 'repository: ghcr.io/todo-backend/todo-app\n    tag: "{v}"\n',
     "repository: ghcr.io/todo-backend/todo-app\n", "image.app.tag is missing"),
    ("CHANGELOG.md", "## [{v}] - 2026-12-01\n", "", "CHANGELOG.md has no section for {v}"),
])
def test_the_version_job_refuses_a_tag_that_something_does_not_name(release_tree, file, old, new, message):
    tree, version = release_tree
    path = tree / file
    text = path.read_text()
    assert old.format(v=version) in text, f"{file} no longer has {old!r}: update this test"
    path.write_text(text.replace(old.format(v=version), new, 1))

    result = run_version_job(tree, f"v{version}")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "::error::" in result.stdout and message.format(v=version) in result.stdout, result.stdout
    assert (tree / "github-output").read_text() == "", "no version output for a refused tag"


def test_an_empty_changelog_section_is_refused_too(release_tree):
    tree, version = release_tree
    (tree / "CHANGELOG.md").write_text(
        (REPO_ROOT / "CHANGELOG.md").read_text().replace(
            "\n## [Unreleased]\n", f"\n## [{version}] - 2026-12-01\n\n## [0.0.1] - 2026-01-01\n\n- old\n", 1))

    result = run_version_job(tree, f"v{version}")

    assert result.returncode == 1
    assert f"CHANGELOG.md has no section for {version}" in result.stdout


def test_the_release_job_publishes_the_notes_the_version_job_extracted():
    workflow = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    uploads = [s for s in workflow["jobs"]["version"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    script = step_script("release", "Create the release")

    assert [s["with"]["path"] for s in uploads] == ["release-notes.md"]
    assert "--notes-file dist/release-notes.md" in script
    assert "--generate-notes" not in script, "no silent fallback: the version job refuses a tag without notes"


PRODUCTION_VALUES_STEP = "The production values"


def test_the_deploy_job_refuses_to_run_without_the_environments_production_values(tmp_path):
    result = run_step(step_script("deploy", PRODUCTION_VALUES_STEP), tmp_path,
                      {"PRODUCTION_VALUES": "", "RUNNER_TEMP": str(tmp_path)})

    assert result.returncode == 1
    assert "::error::the production environment has no secret PRODUCTION_VALUES" in result.stdout
    assert not (tmp_path / "production-values.yaml").exists()


def test_the_deploy_job_refuses_the_unedited_example_values(tmp_path):
    example = (CHART_DIR / "values-production.yaml").read_text()

    result = run_step(step_script("deploy", PRODUCTION_VALUES_STEP), tmp_path,
                      {"PRODUCTION_VALUES": example, "RUNNER_TEMP": str(tmp_path)})

    assert result.returncode == 1
    assert "::error::PRODUCTION_VALUES still names api.example.com" in result.stdout


def test_the_deploy_job_installs_with_the_values_of_its_environment_and_never_the_repositorys(tmp_path):
    values = "ingress:\n  hosts:\n    - host: todo.acme.test\n"

    result = run_step(step_script("deploy", PRODUCTION_VALUES_STEP), tmp_path,
                      {"PRODUCTION_VALUES": values, "RUNNER_TEMP": str(tmp_path)})

    assert result.returncode == 0, result.stdout + result.stderr
    written = tmp_path / "production-values.yaml"
    assert yaml.safe_load(written.read_text()) == yaml.safe_load(values)
    assert written.stat().st_mode & 0o077 == 0, "readable by the runner's user only"
    deploy = yaml.safe_load(RELEASE_WORKFLOW.read_text())["jobs"]["deploy"]
    install = step_script("deploy", "Verify the signatures")
    assert '--values "$RUNNER_TEMP/production-values.yaml"' in install
    assert "values-production.yaml" not in install
    assert not any(s.get("uses", "").startswith("actions/checkout@") for s in deploy["steps"]), (
        "the deploy job does not even check out the repository")
    assert deploy["environment"] == "production"
