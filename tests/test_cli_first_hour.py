"""The command line as a new user meets it: both forms of a command, help per mode, short errors that name
what they are about, quiet broken pipes, a version, stats before anything is indexed, the first model
preparation announced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TEST_MODEL

import photoseek
from photoseek import cli
from photoseek.errors import InvalidArgumentError


def photoseek_command(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PHOTOSEEK_HOME": str(home), "COLUMNS": "80", **env}
    environment.pop("PHOTOSEEK_MILVUS_URI", None)
    return subprocess.run([sys.executable, "-m", "photoseek", *args], capture_output=True, text=True, env=environment,
                          timeout=300, cwd=ROOT)


def test_the_subcommand_form_and_the_cards_form_mean_the_same() -> None:
    short = vars(cli.parse(["search", "a", "red", "circle", "--top-k", "3", "--in", "."]))
    card = vars(cli.parse(["--mode", "search", "--query", "a red circle", "--top-k", "3", "--in", "."]))
    short.pop("words")
    assert short == card and card["query"] == ["a red circle"] and card["mode"] == "search"
    indexed = cli.parse(["index", "/photos/a", "--image-dir", "/photos/b", "--exclude", "*.tmp"])
    assert sorted(indexed.image_dir) == ["/photos/a", "/photos/b"] and indexed.exclude == ["*.tmp"]


@pytest.mark.parametrize("mode", list(cli.MODES))
def test_each_mode_has_its_own_short_help(mode: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as stop:
        cli.parse([mode, "--help"])
    text = capsys.readouterr().out
    assert stop.value.code == 0 and text.startswith(f"usage: photoseek {mode}")
    assert len(text.splitlines()) <= 40, text
    assert max(len(line) for line in text.splitlines()) <= 80
    own = {"index": "--image-dir", "search": "--top-k", "similar": "--image", "duplicates": "--threshold",
           "stats": "--collection", "serve": "--token", "serve-encoder": "--http-port"}[mode]
    assert own in text
    if mode != "index":
        assert "--image-dir" not in text or mode == "serve"  # another mode's options stay out
    with pytest.raises(SystemExit):
        cli.parse(["--mode", mode, "--help"])  # the card's form asks for the same help
    assert capsys.readouterr().out == text


def test_help_without_a_mode_lists_the_modes_not_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.parse(["--help"])
    text = capsys.readouterr().out
    assert stop.value.code == 0 and len(text.splitlines()) <= 30
    for mode in cli.MODES:
        assert f"  {mode} " in text
    assert "--taken-after" not in text


@pytest.mark.parametrize(("argv", "expected"), [
    (["serach", "cat"], "unknown mode 'serach' (did you mean 'search'?)"),
    (["--mode", "serach", "--query", "cat"], "unknown mode 'serach' (did you mean 'search'?)"),
    ([], "what to do? photoseek MODE"),
])
def test_a_wrong_or_missing_mode_is_one_short_error(argv: list[str], expected: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        cli.parse(argv)
    assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)


def test_a_bad_number_names_its_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["search", "cat", "--top-k", "0"]) == 2
    error = capsys.readouterr().err
    assert "--top-k" in error and "top_k" not in error


def test_version() -> None:
    done = photoseek_command("--version", home=Path("/nonexistent"))
    assert done.returncode == 0 and done.stdout.strip() == f"photoseek {photoseek.__version__}"


@pytest.mark.slow
def test_stats_before_anything_is_indexed_say_so(tmp_path: Path) -> None:
    done = photoseek_command("stats", home=tmp_path / "home")
    assert done.returncode == 0 and "nothing is indexed yet" in done.stdout and "photoseek index" in done.stdout
    as_json = json.loads(photoseek_command("stats", "--json", home=tmp_path / "home").stdout)
    assert as_json["exists"] is False and as_json["total_images"] == 0


@pytest.mark.slow
def test_the_first_run_says_what_it_prepares_then_pipes_and_errors_end_quietly(tmp_path: Path, scenes: Path) -> None:
    home, cache = tmp_path / "home", str(tmp_path / "cache")
    first = photoseek_command("index", str(scenes), "--model", TEST_MODEL, home=home, PHOTOSEEK_CACHE=cache)
    assert first.returncode == 0, first.stderr
    assert f"preparing {TEST_MODEL} for ONNX Runtime, once" in first.stderr
    again = photoseek_command("index", str(scenes), home=home, PHOTOSEEK_CACHE=cache)
    assert again.returncode == 0 and "preparing" not in again.stderr and "unchanged 24" in again.stdout

    # a reader that stops reading (| head -1): exit 0, no traceback
    environment = {**os.environ, "PHOTOSEEK_HOME": str(home), "PHOTOSEEK_CACHE": cache}
    reader = subprocess.Popen([sys.executable, "-m", "photoseek", "search", "a red circle", "--top-k", "24", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, cwd=ROOT)
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # closed before anything is written: the first write meets a broken pipe
    error = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 0 and "Traceback" not in error and "BrokenPipe" not in error

    missing = photoseek_command("search", "--image", "no-such-photo.jpg", home=home, PHOTOSEEK_CACHE=cache)
    assert missing.returncode == 2 and "no-such-photo.jpg" in missing.stderr and "Traceback" not in missing.stderr
