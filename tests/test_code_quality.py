"""The project's own checks: ruff and mypy run with the tests, so CI enforces them; and the layout holds: the
package never imports the three public faces, and dependencies point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

FACES = {"image_search", "clip_encoder", "milvus_store"}
# who may import whom inside the package (parts not named may import any part below them)
LOWER = {"store": {"engine", "servers", "cli", "indexing"}, "encoders": {"engine", "servers", "cli", "indexing", "store"},
         "engine": {"servers", "cli"}, "indexing": {"servers", "cli"}}


def test_ruff_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_the_package_imports_no_face_and_its_parts_point_one_way() -> None:
    """The three faces re-export the package; nothing inside imports them (a second home for the code, and a cycle).
    The store and the encoders never reach up into the engine, the indexing or the servers."""
    wrong = []
    for path in sorted((ROOT / "photoseek").rglob("*.py")):
        part = path.relative_to(ROOT / "photoseek").parts[0].removesuffix(".py")
        for module in imports_of(path):
            top = module.split(".")[0]
            if top in FACES:
                wrong.append(f"{path.relative_to(ROOT)} imports the face {module}")
            if top == "photoseek" and len(module.split(".")) > 1:
                target = module.split(".")[1]
                if target in LOWER.get(part, set()):
                    wrong.append(f"{path.relative_to(ROOT)} ({part}) imports {module}, a part above it")
    assert wrong == [], "\n".join(wrong)
    for face in FACES:  # and each face is short: a re-export, not a second implementation
        assert len((ROOT / f"{face}.py").read_text().splitlines()) < 60, face
