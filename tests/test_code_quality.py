"""The project's own checks: ruff and mypy run with the tests, so CI enforces them; and the planted-bug
proof (bench/planted_bugs.py) still applies to the code as it is."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_ruff_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_planted_bug_still_plants_and_names_tests_that_exist(tmp_path: Path) -> None:
    """A plant whose text the code no longer holds plants nothing, so its bug reads as 'missed' only when
    the whole (~25-minute) script is run: refactors must bring the plants along, and this says so at once."""
    done = subprocess.run([sys.executable, "bench/planted_bugs.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # the check itself can fail: a plant that no longer applies, one that applies twice, a test that is gone
    spec = importlib.util.spec_from_file_location("planted_bugs", ROOT / "bench" / "planted_bugs.py")
    assert spec is not None and spec.loader is not None
    planted = importlib.util.module_from_spec(spec)
    sys.modules["planted_bugs"] = planted
    spec.loader.exec_module(planted)
    (tmp_path / "tests").mkdir()
    (tmp_path / "code.py").write_text("x = 1\nx = 1\ny = 2\n")
    (tmp_path / "tests" / "test_code.py").write_text("def test_y() -> None:\n    pass\n")
    bugs = [planted.Bug("gone", "code.py", "z = 3", "z = 4", ("tests/test_code.py::test_y",)),
            planted.Bug("twice", "code.py", "x = 1", "x = 0", ("tests/test_code.py::test_y",)),
            planted.Bug("test gone", "code.py", "y = 2", "y = 0", ("tests/test_code.py::test_x[lite]",)),
            planted.Bug("fine", "code.py", "y = 2", "y = 0", ("tests/test_code.py::test_y[lite]", "tests/test_code.py"))]
    assert planted.stale(bugs, tmp_path) == [
        "gone: 'z = 3' is in code.py 0 times, not once",
        "twice: 'x = 1' is in code.py 2 times, not once",
        "test gone: its test tests/test_code.py::test_x[lite] does not exist"]
