"""Every command the README and the guides show is one photoseek accepts as written: a renamed or removed flag,
a mistyped mode or a wrong form fails here before a user copies it."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import ROOT

from photoseek import cli
from photoseek.errors import InvalidArgumentError

DOCUMENTS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAM = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*(photoseek|python image_search\.py|python -m photoseek)\s")


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) for each photoseek command inside a fenced block."""
    found = []
    for document in DOCUMENTS:
        inside = False
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("```"):
                inside = not inside
                continue
            if inside and PROGRAM.match(line.strip()):
                found.append((f"{document.relative_to(ROOT)}:{number}", line.strip()))
    return found


def arguments(line: str) -> list[str]:
    words = shlex.split(line.removeprefix("$ "), comments=True)
    # `[--json]`: an optional part, written as usage lines write it; its flags are checked all the same
    words = [w.strip("[]") for w in words if w.strip("[]")]
    for stop in ("|", "&", "&&", ";"):  # a pipe or a second command ends this one
        if stop in words:
            words = words[: words.index(stop)]
    while "=" in words[0] and not words[0].startswith("-"):  # VAR=value before the program
        words = words[1:]
    skip = 3 if words[:3] == ["python", "-m", "photoseek"] else 2 if words[0] == "python" else 1
    return [w.rstrip("&") for w in words[skip:]]


COMMANDS = documented_commands()


def test_the_documents_show_commands() -> None:
    where = {w.split(":")[0] for w, _ in COMMANDS}
    assert "README.md" in where and len(COMMANDS) >= 30, where


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_is_accepted_as_written(where: str, line: str) -> None:
    argv = arguments(line)
    try:
        args = cli.parse(argv)
    except SystemExit as stop:  # argparse's own refusal (an unknown flag, a bad value)
        pytest.fail(f"{where}: {line!r} is refused (exit {stop.code})")
    except InvalidArgumentError as error:
        pytest.fail(f"{where}: {line!r} is refused: {error}")
    assert args.mode in cli.MODES
