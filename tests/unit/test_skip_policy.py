"""tests/conftest.py's skip policy, run on a tiny throw-away suite: under CI an unmarked skip fails,
an `optional` one stays a skip with its reason shown; without CI skips stay skips."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
SUITE = '''
import pytest

def test_plain_skip():
    pytest.skip("no frobnicator here")

@pytest.mark.optional("frobnicators are rare")
def test_optional_skip():
    pytest.skip("no frobnicator here")

def test_passes():
    assert True
'''


def run_suite(tmp_path: Path, source: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)


def test_under_ci_an_unmarked_skip_fails_and_an_optional_one_is_skipped(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, SUITE, ci="1")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 passed, 1 skipped" in proc.stdout
    assert ("unmarked skip under CI (Skipped: no frobnicator here): a test that may skip needs "
            "@pytest.mark.optional(reason)") in proc.stdout
    assert "no frobnicator here [optional: frobnicators are rare]" in proc.stdout


def test_without_ci_skips_stay_skips_and_are_listed(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, SUITE, ci=None)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped" in proc.stdout
    assert "test_sample.py:5: no frobnicator here" in proc.stdout


def test_ci_set_to_false_is_not_strict(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, SUITE, ci="false")
    assert proc.returncode == 0, proc.stdout


def test_under_ci_a_module_skipped_at_import_fails(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, 'import pytest\npytest.skip("no module", allow_module_level=True)\n', ci="1")
    assert proc.returncode == 2, proc.stdout  # a collection error interrupts the session
    assert "module skipped at collection under CI: Skipped: no module" in proc.stdout


def test_an_optional_mark_without_reason_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, 'import pytest\n@pytest.mark.optional\ndef test_x():\n    pass\n', ci=None)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "test_sample.py::test_x: @pytest.mark.optional needs a reason" in proc.stdout + proc.stderr
