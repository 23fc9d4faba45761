"""A library that stays current: the watcher on a real filesystem (real watchdog events), then the engine,
the CLI and the HTTP server keeping a real index up to date as files are created, changed, renamed,
moved and deleted, and as a watched folder disappears and comes back."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import pytest
from conftest import ROOT, TEST_MODEL
from http_server import running_server
from PIL import Image

from image_search import ImageSearchEngine
from milvus_store import path_id
from photoseek.indexing.pipeline import IndexSummary
from photoseek.indexing.watch import FolderWatcher, WatchEvent

QUICK = 0.3  # debounce and poll of the tests' watchers, in seconds


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


@contextmanager
def watching(root: Path, catch_up: bool = False) -> Iterator[tuple[list[list[str]], list[WatchEvent]]]:
    applied: list[list[str]] = []
    events: list[WatchEvent] = []
    stop = threading.Event()
    watcher = FolderWatcher([str(root)], applied.append, on_event=events.append, debounce=QUICK, poll_seconds=QUICK,
                            catch_up=catch_up)
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    time.sleep(0.3)  # the observer is scheduled
    try:
        yield applied, events
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def photo(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path)
    return path


def test_changes_name_the_folders_to_bring_up_to_date(tmp_path: Path) -> None:
    root = tmp_path / "library"
    photo(root / "a" / "one.jpg")
    photo(root / "b" / "two.jpg")
    (root / "c" / "deep").mkdir(parents=True)
    with watching(root) as (applied, _):
        photo(root / "a" / "new.jpg")
        wait_for(lambda: applied, what="a created file")
        assert applied == [[str(root / "a")]]

        applied.clear()
        (root / "a" / "new.jpg").rename(root / "a" / "renamed.jpg")
        wait_for(lambda: applied, what="a rename")
        assert applied == [[str(root / "a")]]

        applied.clear()  # a move between folders: the folder holding both, so the vector can be reused
        (root / "a" / "renamed.jpg").rename(root / "b" / "moved.jpg")
        wait_for(lambda: applied, what="a move")
        assert applied == [[str(root)]]

        applied.clear()
        shutil.rmtree(root / "c")
        wait_for(lambda: applied, what="a deleted folder")
        assert applied == [[str(root)]]

        applied.clear()  # a burst: one batch after the quiet period, the folders none of the others contains
        for i in range(20):
            photo(root / "b" / f"burst{i}.jpg")
        photo(root / "b" / "x" / "inner.jpg")
        wait_for(lambda: applied, what="a burst")
        time.sleep(QUICK * 3)
        assert applied == [[str(root / "b")]]

        applied.clear()  # an editor's temporary and hidden files are not photos
        (root / "a" / ".one.jpg.swp").write_bytes(b"x")
        (root / "a" / "notes.txt").write_text("x")
        time.sleep(QUICK * 4)
        assert applied == []


def test_once_watching_each_folder_is_brought_up_to_date(tmp_path: Path) -> None:
    """What changed between an index run and the watching is not missed: a pass once the observer runs."""
    root = tmp_path / "library"
    photo(root / "one.jpg")
    with watching(root, catch_up=True) as (applied, events):
        wait_for(lambda: applied, what="the catch-up pass")
        assert applied == [[str(root)]] and events[0] == WatchEvent("watching", (str(root),))


def test_a_vanished_folder_is_left_alone_and_taken_up_again(tmp_path: Path) -> None:
    root = tmp_path / "disk"
    photo(root / "one.jpg")
    with watching(root) as (applied, events):
        moved_away = tmp_path / "elsewhere"
        root.rename(moved_away)  # what an unmount looks like from here
        wait_for(lambda: any(e.kind == "gone" for e in events), what="gone")
        time.sleep(QUICK * 3)
        assert applied == []  # nothing to bring up to date: its rows must stay
        moved_away.rename(root)
        wait_for(lambda: any(e.kind == "back" for e in events), what="back")
        wait_for(lambda: [str(root)] in applied, what="a full pass once it is back")
        applied.clear()
        photo(root / "after.jpg")  # watched again
        wait_for(lambda: applied, what="a change after coming back")
        assert applied == [[str(root)]]


def test_a_failed_run_is_tried_again(tmp_path: Path) -> None:
    root = tmp_path / "library"
    photo(root / "one.jpg")
    calls: list[list[str]] = []
    errors: list[BaseException] = []

    def flaky(folders: list[str]) -> None:
        calls.append(folders)
        if len(calls) == 1:
            raise ConnectionError("the store went away for a moment")

    stop = threading.Event()
    watcher = FolderWatcher([str(root)], flaky, on_error=errors.append, debounce=QUICK, poll_seconds=QUICK, catch_up=False)
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.3)
        photo(root / "two.jpg")
        wait_for(lambda: len(calls) >= 2, what="a second try")
        assert calls[:2] == [[str(root)], [str(root)]] and isinstance(errors[0], ConnectionError)
    finally:
        stop.set()
        thread.join(timeout=10)


# ------------------------------------------------------------------------------------------- a real index

@pytest.mark.slow
def test_the_index_follows_the_folder_while_watching(tmp_path: Path, scenes: Path) -> None:
    library = tmp_path / "library"
    shutil.copytree(scenes, library)
    engine = ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(tmp_path / "watch.db"), device="cpu")
    changes: list[tuple[str, IndexSummary]] = []
    stop = threading.Event()
    thread = threading.Thread(target=engine.watch, args=([library], stop),
                              kwargs={"on_change": lambda f, s: changes.append((f, s)), "debounce": QUICK})
    try:
        assert engine.index_directory(library).indexed == 24
        thread.start()
        time.sleep(0.5)
        rows = lambda: {f.path: f for f in engine.store.iter_files()}  # noqa: E731

        (library / "sub").mkdir()
        shutil.copy(scenes / "scene_00001.png", library / "sub" / "copy.png")
        wait_for(lambda: str(library / "sub" / "copy.png") in rows(), what="a created file indexed")
        found = engine.search_by_image(library / "sub" / "copy.png", top_k=2)
        assert {Path(r.path).name for r in found} == {"copy.png", "scene_00001.png"} and found[0].score > 0.999

        before = rows()[str(library / "scene_00002.png")]
        shutil.copy(scenes / "scene_00003.png", library / "scene_00002.png")  # its content changes
        wait_for(lambda: rows()[str(library / "scene_00002.png")].fingerprint != before.fingerprint, what="a change")
        assert engine.search_by_image(scenes / "scene_00003.png", top_k=2)[1].score > 0.999  # encoded again

        changes.clear()
        (library / "scene_00004.png").rename(library / "sub" / "moved.png")
        wait_for(lambda: str(library / "sub" / "moved.png") in rows(), what="a move")
        assert str(library / "scene_00004.png") not in rows()
        wait_for(lambda: changes, what="its summary")
        assert sum(s.moved for _, s in changes) == 1 and sum(s.indexed for _, s in changes) == 0  # its vector reused

        (library / "scene_00005.png").unlink()
        wait_for(lambda: str(library / "scene_00005.png") not in rows(), what="a deletion")
        on_disk = sorted(str(p) for p in library.rglob("*.png"))
        assert sorted(rows()) == on_disk and engine.store.count() == len(on_disk)  # nothing twice, nothing stale
    finally:
        stop.set()
        thread.join(timeout=20)
        engine.close()
    assert not thread.is_alive()


@pytest.mark.slow
def test_cli_watch_applies_changes_until_interrupted(tmp_path: Path, scenes: Path) -> None:
    from test_cli import run_cli

    library = tmp_path / "library"
    shutil.copytree(scenes, library)
    database, home = str(tmp_path / "cli.db"), tmp_path / "home"
    environment = {**os.environ, "PHOTOSEEK_HOME": str(home)}
    environment.pop("PHOTOSEEK_MILVUS_URI", None)
    process = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "index", "--watch", "--model", TEST_MODEL,
                                "--milvus-uri", database, "--image-dir", str(library), "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    lines: queue.Queue[str] = queue.Queue()  # both streams, read by threads: a missing line fails, never hangs

    def read(stream: IO[str], tag: str) -> None:
        for line in stream:
            lines.put(tag + line)

    assert process.stdout is not None and process.stderr is not None
    for stream, tag in ((process.stdout, "out:"), (process.stderr, "err:")):
        threading.Thread(target=read, args=(stream, tag), daemon=True).start()

    def until(wanted: Callable[[str], bool], what: str, timeout: float = 120) -> str:
        seen = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen += line
            if wanted(seen):
                return seen
        raise AssertionError(f"no {what} within {timeout}s; saw: {seen[-2000:]}")

    try:
        first = until(lambda seen: "watching 1 folder" in seen and "out:indexed 24, unchanged 0" in seen, "first pass")
        assert "failed 0" in first
        photo(library / "new.jpg", (10, 200, 10))
        (library / "scene_00001.png").unlink()
        # the two changes may come as one run or two
        applied = until(lambda seen: "indexed 1," in seen and "removed 1," in seen, "the changes applied", timeout=60)
        assert "failed 0" in applied
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            said = "".join(lines.get_nowait() for _ in range(lines.qsize()))
            raise AssertionError(f"Ctrl-C did not stop the watching CLI within 60 s; it then said: {said[-2000:]}") from None
    assert code == 0
    done = run_cli("--mode", "stats", "--milvus-uri", database, "--json", home=home)
    assert '"total_images": 24' in done.stdout
    wrong = run_cli("--mode", "search", "--watch", "--query", "x", "--milvus-uri", database, home=home, check=False)
    assert wrong.returncode == 2 and "--watch applies to --mode index and serve" in wrong.stderr
    missing = run_cli("--mode", "index", "--watch", "--milvus-uri", database, home=home, check=False)
    assert missing.returncode == 2 and "--image-dir" in missing.stderr


@pytest.mark.slow
def test_the_server_watches_its_folders_as_index_jobs(tmp_path: Path, scenes: Path) -> None:
    from photoseek.servers.http_api import create_app

    library = tmp_path / "library"
    shutil.copytree(scenes, library)
    with ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(tmp_path / "served.db"), device="cpu") as engine:
        app = create_app(engine, thumbnail_dir=tmp_path / "thumbs", index_roots=[str(tmp_path)], watch_folders=[str(library)])
        with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            def jobs() -> list[dict]:  # type: ignore[type-arg]
                return client.get("/api/index").json()

            wait_for(lambda: jobs() and all(j["state"] == "done" for j in jobs()), timeout=120, what="the first pass")
            assert jobs()[0]["summary"]["indexed"] == 24
            photo(library / "added.jpg", (10, 10, 220))
            wait_for(lambda: engine.image_record(path_id(str(library / "added.jpg"))) is not None, what="the new photo")
            assert len(jobs()) >= 2


def test_folders_whose_names_start_alike_are_each_brought_up_to_date(tmp_path: Path) -> None:
    """lib/b and lib/b2 change in one burst: b does not hold b2, so both are runs of their own."""
    root = tmp_path / "lib"
    photo(root / "b" / "one.jpg")
    photo(root / "b2" / "one.jpg")
    with watching(root) as (applied, _):
        photo(root / "b" / "two.jpg")
        photo(root / "b2" / "two.jpg")
        wait_for(lambda: applied, what="a burst in two folders")
        time.sleep(QUICK * 3)
        assert sorted(folder for batch in applied for folder in batch) == [str(root / "b"), str(root / "b2")]


@pytest.mark.slow
def test_while_watching_exclude_holds_in_subfolders_and_a_vanished_disk_keeps_its_rows(tmp_path: Path, scenes: Path) -> None:
    library = tmp_path / "disk"
    (library / "trip").mkdir(parents=True)
    for name in ("scene_00001.png", "scene_00002.png"):
        shutil.copy(scenes / name, library / "trip" / name)
    engine = ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(tmp_path / "watch.db"), device="cpu")
    changes: list[tuple[str, IndexSummary]] = []
    stop = threading.Event()
    thread = threading.Thread(target=engine.watch, args=([library], stop),
                              kwargs={"on_change": lambda f, s: changes.append((f, s)), "debounce": QUICK,
                                      "exclude": ["exports", "*.tmp.png"]})
    try:
        assert engine.index_directory(library, exclude=["exports", "*.tmp.png"]).indexed == 2
        thread.start()
        wait_for(lambda: changes, what="the catch-up run")
        rows = lambda: {f.path for f in engine.store.iter_files()}  # noqa: E731

        # changes deep inside: the patterns still apply, relative to the watched folder as in a full run
        (library / "trip" / "exports").mkdir()
        shutil.copy(scenes / "scene_00003.png", library / "trip" / "exports" / "big.png")
        shutil.copy(scenes / "scene_00004.png", library / "trip" / "draft.tmp.png")
        shutil.copy(scenes / "scene_00005.png", library / "trip" / "kept.png")
        wait_for(lambda: str(library / "trip" / "kept.png") in rows(), what="the new photo indexed")
        time.sleep(QUICK * 4)
        assert rows() == {str(library / "trip" / n) for n in ("scene_00001.png", "scene_00002.png", "kept.png")}

        # the disk goes away (unmounted, unplugged): its photos are not deleted from the index
        changes.clear()
        away = tmp_path / "unplugged"
        library.rename(away)
        time.sleep(QUICK * 8)
        assert len(rows()) == 3 and all(s.removed == 0 for _, s in changes)
        away.rename(library)
        wait_for(lambda: changes, what="a run once the disk is back")
        assert len(rows()) == 3
    finally:
        stop.set()
        thread.join(timeout=20)
        engine.close()
    assert not thread.is_alive()
