"""checkov (framework kubernetes) over the rendered manifests of every values
file: no failed check. Skipped checks are listed, with their reasons, in the
repository's .checkov.yaml, which also names the one resource-scoped skip
(the helm test pod's probe checks, by annotation). One checkov run over a directory holding every
render: a run per values file would cost its start-up each time."""

import json
import shutil
import subprocess

import pytest

from chart_support import REPO_ROOT, VALUES_FILES, render, values_for


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rendered")
    for case, files in VALUES_FILES.items():
        case_dir = root / case
        case_dir.mkdir()
        for path, text in render(values_for(files)).items():
            if path.endswith("NOTES.txt") or not text.strip():
                continue
            (case_dir / path.replace("/", "_")).write_text(text)
    return root


def test_checkov_finds_nothing_in_the_rendered_chart(rendered_dir):
    checkov = shutil.which("checkov")
    assert checkov, "checkov is installed by scripts/test.sh (tests/requirements.txt)"

    result = subprocess.run(
        [checkov, "--directory", str(rendered_dir), "--framework", "kubernetes",
         "--config-file", str(REPO_ROOT / ".checkov.yaml"), "--skip-download",
         "--quiet", "--compact", "--output", "json"],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )

    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']})"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert sum(report["summary"]["resource_count"] for report in reports) >= 100
    assert result.returncode == 0, result.stderr[-2000:]
