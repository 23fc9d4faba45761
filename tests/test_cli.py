"""The command line as a person runs it: real processes, real files, real Milvus Lite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, TEST_MODEL, captions_of

pytestmark = pytest.mark.slow


def run_cli(*args: str, home: Path, check: bool = True, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PHOTOSEEK_HOME": str(home), **env}
    environment.pop("PHOTOSEEK_MILVUS_URI", None)
    done = subprocess.run([sys.executable, str(ROOT / "image_search.py"), *args], capture_output=True, text=True,
                          env=environment, timeout=300, cwd=cwd)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_index_then_search_finds_the_same_collection(tmp_path: Path, scenes: Path) -> None:
    home = tmp_path / "home"
    captions = captions_of(scenes)
    (scenes / "broken.jpg").write_text("nope")
    indexed = run_cli("--mode", "index", "--encode-mode", "local", "--model", TEST_MODEL, "--image-dir", str(scenes),
                      "--descriptions", str(scenes / "captions.json"), home=home)
    assert "indexed 24, unchanged 0, removed 0, failed 1" in indexed.stdout
    assert "broken.jpg: not a recognised image format" in indexed.stderr
    assert (home / "milvus.db").is_dir()  # the documented default location

    target = next(name for name, c in captions.items() if c["en"].count(" and ") == 0)
    searched = run_cli("--mode", "search", "--query", captions[target]["zh"], "--top-k", "5", "--json", home=home)
    results = json.loads(searched.stdout)
    assert len(results) == 5 and results[0]["rank"] == 1
    assert {"path", "score", "description", "rank"} <= set(results[0])
    assert any(Path(r["path"]).name == target for r in results)

    again = run_cli("--mode", "index", "--image-dir", str(scenes), home=home)
    assert "indexed 0, unchanged 24, removed 0, failed 1" in again.stdout
    stats = json.loads(run_cli("--mode", "stats", "--json", home=home).stdout)
    assert stats["total_images"] == 24 and stats["model"] == TEST_MODEL


def test_several_folders_report_every_failure_and_a_run_that_indexed_nothing_fails(tmp_path: Path) -> None:
    from make_scenes import write_scenes

    home = tmp_path / "home"
    first, second, junk = tmp_path / "first", tmp_path / "second", tmp_path / "junk"
    write_scenes(first, count=3, seed=1)
    write_scenes(second, count=2, seed=2)
    (first / "bad-one.jpg").write_text("not an image")
    (second / "bad-two.png").write_bytes(b"")
    done = run_cli("--mode", "index", "--model", TEST_MODEL, "--image-dir", str(first), "--image-dir", str(second),
                   "--json", "-q", home=home)
    summary = json.loads(done.stdout)
    assert summary["indexed"] == 5 and sorted(Path(f["path"]).name for f in summary["failed"]) == ["bad-one.jpg", "bad-two.png"]
    text = run_cli("--mode", "index", "--image-dir", str(first), "--image-dir", str(second), home=home)
    assert "indexed 0, unchanged 5, removed 0, failed 2" in text.stdout
    assert "bad-one.jpg" in text.stderr and "bad-two.png" in text.stderr

    junk.mkdir()
    (junk / "a.jpg").write_text("no")
    (junk / "b.png").write_text("no")
    nothing = run_cli("--mode", "index", "--image-dir", str(junk), home=home, check=False)
    assert nothing.returncode == 1 and "failed 2" in nothing.stdout  # every file failed: not a success
    partly = run_cli("--mode", "index", "--image-dir", str(junk), "--image-dir", str(first), home=home, check=False)
    assert partly.returncode == 0 and "failed 3" in partly.stdout  # some files are fine: reported, not fatal


def test_errors_are_one_clear_line_and_nonzero(tmp_path: Path, scenes: Path) -> None:
    home = tmp_path / "home"
    empty = run_cli("--mode", "search", "--query", "  ", home=home, check=False)
    assert empty.returncode == 2 and "error: the query is empty" in empty.stderr and "Traceback" not in empty.stderr
    missing = run_cli("--mode", "index", "--model", TEST_MODEL, "--image-dir", str(tmp_path / "nope"), home=home, check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    run_cli("--mode", "index", "--model", TEST_MODEL, "--image-dir", str(scenes), home=home)
    mismatch = run_cli("--mode", "search", "--model", "ViT-B-32::openai", "--query", "cat", home=home, check=False)
    assert mismatch.returncode == 1 and "--rebuild" in mismatch.stderr and "Traceback" not in mismatch.stderr
    bad_json = tmp_path / "d.json"
    bad_json.write_text("{not json")
    described = run_cli("--mode", "index", "--image-dir", str(scenes), "--descriptions", str(bad_json), home=home, check=False)
    assert described.returncode == 2 and "not valid JSON" in described.stderr


def test_missing_weights_offline_is_one_clear_message(tmp_path: Path, scenes: Path) -> None:
    started = time.time()
    done = run_cli("--mode", "index", "--model", "ViT-B-32::openai", "--image-dir", str(scenes), home=tmp_path / "h",
                   check=False, HF_HOME=str(tmp_path / "empty_hf"), HF_HUB_OFFLINE="1")
    assert done.returncode == 1
    assert "could not load model 'ViT-B-32::openai'" in done.stderr and "--model ViT-B-32::/path/to" in done.stderr
    assert "Traceback" not in done.stderr and time.time() - started < 60


def test_a_locked_lite_database_names_the_holder(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from milvus_store import MilvusStore
        store = MilvusStore(uri={str(db)!r})
        print("ready", flush=True)
        time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        done = run_cli("--mode", "stats", "--milvus-uri", str(db), home=tmp_path, check=False)
        assert done.returncode == 1
        assert "in use by another process" in done.stderr and str(holder.pid) in done.stderr
    finally:
        holder.kill()
        holder.wait()


def test_sigkill_mid_run_loses_nothing_and_rerun_finishes(tmp_path: Path) -> None:
    from make_scenes import write_scenes

    folder = tmp_path / "many"
    write_scenes(folder, count=300, seed=11)
    db = tmp_path / "kill.db"
    script = textwrap.dedent(f"""
        import sys
        from image_search import ImageSearchEngine
        engine = ImageSearchEngine(model_name={TEST_MODEL!r}, milvus_uri={str(db)!r}, batch_size=16, device="cpu")
        engine.index_directory({str(folder)!r}, progress=lambda p: print(p.done, flush=True))
        print("finished", flush=True)
        """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip().isdigit() and int(line) >= 120:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    from image_search import ImageSearchEngine

    with ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(db), batch_size=16, device="cpu") as engine:
        kept = engine.get_stats()["total_images"]
        assert 0 < kept < 300  # batches committed before the kill survived, the run had not finished
        summary = engine.index_directory(folder)
        assert summary.unchanged == kept and summary.indexed == 300 - kept
        assert engine.get_stats()["total_images"] == 300  # no duplicates


def test_in_limits_a_search_to_a_folder_and_paths_only_prints_bare_paths(tmp_path: Path) -> None:
    """`--in DIR` (relative to the current folder) for text, composed, image and similar searches; a sibling
    folder sharing the name's prefix (trip, trip2) stays out; `--paths-only` prints one path per line."""
    from make_scenes import write_scenes

    home, library = tmp_path / "home", tmp_path / "library"
    trip, trip2, day1 = library / "trip", library / "trip2", library / "trip" / "day1"
    write_scenes(trip, count=6, seed=11)
    write_scenes(day1, count=4, seed=12)
    write_scenes(trip2, count=8, seed=13)
    run_cli("--mode", "index", "--model", TEST_MODEL, "--image-dir", str(library), "-q", home=home)

    def paths(*args: str, cwd: Path = tmp_path) -> list[Path]:
        done = run_cli("--mode", "search", "--top-k", "50", "--paths-only", *args, home=home, cwd=cwd)
        lines = done.stdout.splitlines()
        assert all(Path(line).is_absolute() and Path(line).is_file() for line in lines), done.stdout
        return [Path(line) for line in lines]

    everything = paths("--query", "a red circle")
    assert len(everything) == 18
    here = paths("--query", "a red circle", "--in", ".", cwd=trip)
    assert sorted(here) == sorted(p for p in everything if trip in p.parents) and len(here) == 10
    assert paths("--query", "a red circle", "--in", "library/trip/day1") == [p for p in everything if p.parent == day1]
    assert paths("--query", "a red circle", "--in", str(trip2)) == [p for p in everything if p.parent == trip2]
    composed = paths("--query", "a red circle", "--add", "a square", "--subtract", "red", "--in", "trip2", cwd=library)
    assert len(composed) == 8 and {p.parent for p in composed} == {trip2}
    probe = next(trip2.glob("*.png"))
    by_image = paths("--image", str(probe), "--in", "library/trip")
    assert len(by_image) == 10 and all(trip in p.parents for p in by_image)
    similar = run_cli("--mode", "similar", "--image", str(probe), "--in", str(trip2), "--top-k", "50", "--paths-only", home=home)
    assert sorted(Path(line) for line in similar.stdout.splitlines()) == sorted(p for p in trip2.glob("*.png") if p != probe)

    missing = run_cli("--mode", "search", "--query", "x", "--in", "no-such-folder", home=home, check=False, cwd=tmp_path)
    assert missing.returncode == 2 and "--in 'no-such-folder': no such folder" in missing.stderr
    both = run_cli("--mode", "search", "--query", "x", "--paths-only", "--json", home=home, check=False)
    assert both.returncode == 2 and "choose one" in both.stderr
    several = run_cli("--mode", "search", "--query", "x", "--query", "y", "--paths-only", home=home, check=False)
    assert several.returncode == 2 and "single --query" in several.stderr


def test_cli_uses_the_running_server_that_holds_the_database(tmp_path: Path, scenes: Path) -> None:
    from http_server import free_port

    home = tmp_path / "home"
    run_cli("--mode", "index", "--model", TEST_MODEL, "--image-dir", str(scenes), home=home)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "serve", "--port", str(port),
                               "--index-root", str(tmp_path)],
                              env={**os.environ, "PHOTOSEEK_HOME": str(home)}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not channel_of(home / "milvus.db", "image_search").exists():
            assert server.poll() is None and time.time() < deadline, "server did not start"
            time.sleep(0.2)
        import httpx

        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.time() < deadline
                time.sleep(0.2)
        captions = captions_of(scenes)
        searched = run_cli("--mode", "search", "--query", captions["scene_00001.png"]["en"], "--top-k", "24", "--json", home=home)
        assert "held by a photoseek server" in searched.stderr and f"pid {server.pid}" in searched.stderr
        assert "scene_00001.png" in {Path(r["path"]).name for r in json.loads(searched.stdout)}
        # --in and --paths-only through the server's API: the folder filter travels with each kind of search
        sub = scenes / "sub"
        sub.mkdir()
        within = run_cli("--mode", "search", "--query", "a circle", "--in", str(scenes), "--top-k", "50", "--paths-only", home=home)
        assert len(within.stdout.splitlines()) == 24 and all(Path(line).parent == scenes for line in within.stdout.splitlines())
        assert run_cli("--mode", "search", "--query", "a circle", "--in", str(sub), "--paths-only", home=home).stdout == ""
        probe = str(scenes / "scene_00002.png")
        for mode, extra in (("search", ["--image", probe]), ("similar", ["--image", probe]),
                            ("search", ["--query", "a circle", "--add", "a square"])):
            assert run_cli("--mode", mode, *extra, "--in", str(sub), "--paths-only", home=home).stdout == ""
            assert len(run_cli("--mode", mode, *extra, "--in", str(scenes), "--paths-only", home=home).stdout.splitlines()) == 5
        (scenes / "scene_00001.png").unlink()
        indexed = run_cli("--mode", "index", "--image-dir", str(scenes), home=home)
        assert "indexed 0, unchanged 23, removed 1, failed 0" in indexed.stdout
        stats = json.loads(run_cli("--mode", "stats", "--json", home=home).stdout)
        assert stats["total_images"] == 23
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert not channel_of(home / "milvus.db", "image_search").exists()  # the socket and its note are gone with it


def channel_of(database: Path | str, collection: str) -> Path:
    """Where a server of this store and collection keeps its socket (servers/local_channel.py)."""
    from photoseek.servers.local_channel import _names, channel_folder

    folder = channel_folder(create=True)
    assert folder is not None
    return _names(str(database), collection, folder)[0]


@pytest.mark.slow
def test_one_shot_searches_of_a_milvus_server_go_through_the_running_server(tmp_path: Path, scenes: Path, milvus_server: str,
                                                                            collection_name: str) -> None:
    """With `--mode serve` running over a Milvus server's collection, a CLI search, similar or stats asks
    that warm server (no pymilvus, no model load) and answers as opening the store would; an advert whose
    server no longer answers, another collection, or another model opens the store directly."""
    from http_server import free_port

    home = tmp_path / "home"
    store = ["--milvus-uri", milvus_server, "--collection", collection_name]
    run_cli("--mode", "index", "--model", TEST_MODEL, "--image-dir", str(scenes), *store, home=home)
    query = captions_of(scenes)["scene_00003.png"]["en"]
    direct = run_cli("--mode", "search", "--query", query, "--top-k", "8", "--json", *store, home=home)
    assert "held by a photoseek server" not in direct.stderr
    port = free_port()
    env = {**os.environ, "PHOTOSEEK_HOME": str(home)}
    server = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "serve", "--port", str(port), *store],
                              env=env, stderr=subprocess.PIPE, text=True)
    channel = channel_of(milvus_server, collection_name)
    try:
        deadline = time.time() + 90
        while not channel.exists():
            assert server.poll() is None and time.time() < deadline, "server did not start"
            time.sleep(0.3)
        served = run_cli("--mode", "search", "--query", query, "--top-k", "8", "--json", *store, home=home)
        assert "held by a photoseek server" in served.stderr
        assert [(r["path"], round(r["score"], 4)) for r in json.loads(served.stdout)] == \
            [(r["path"], round(r["score"], 4)) for r in json.loads(direct.stdout)]
        stats = run_cli("--mode", "stats", "--json", *store, home=home)
        assert "held by a photoseek server" in stats.stderr and json.loads(stats.stdout)["total_images"] == 24
        for other in (["--collection", collection_name + "_other"], ["--model", "ViT-B-32::openai"]):
            elsewhere = run_cli("--mode", "stats", "--json", "--milvus-uri", milvus_server, "--collection", collection_name,
                                *other, home=home, check=False)
            assert "held by a photoseek server" not in elsewhere.stderr
        note = channel.with_suffix(".json")
        stale = json.loads(note.read_text())
        assert stale["collection"] == collection_name and stale["pid"] == server.pid
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert not channel.exists() and not note.exists()
    note.write_text(json.dumps({**stale, "pid": os.getpid()}))  # a live process, but no socket any more
    note.chmod(0o600)
    fallback = run_cli("--mode", "search", "--query", query, "--top-k", "8", "--json", *store, home=home)
    assert "held by a photoseek server" not in fallback.stderr and json.loads(fallback.stdout) == json.loads(direct.stdout)
    note.unlink()


@pytest.mark.parametrize("mode", ["serve", "serve-encoder"])
def test_a_busy_port_is_a_clear_error(mode: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run_cli("--mode", mode, "--model", TEST_MODEL, "--port", port, home=tmp_path, check=False)
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr


def test_unreadable_files_and_folders_as_a_real_user(tmp_path: Path, scenes: Path) -> None:
    """Permission bits only bind an unprivileged user: run the CLI as one (root here drops to nobody)."""
    import shutil
    import stat
    import tempfile

    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    if prefix and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permission bits cannot be tested")
    work = Path(tempfile.mkdtemp(dir="/tmp" if prefix else tmp_path))
    try:
        photos, sub = work / "photos", work / "photos" / "trip"
        sub.mkdir(parents=True)
        for i, scene in enumerate(sorted(scenes.glob("*.png"))[:6]):
            shutil.copy(scene, (sub if i >= 4 else photos) / scene.name)
        for path in [work, *work.rglob("*")]:
            if prefix:
                os.chown(path, 65534, 65534)
        env = {"HOME": str(work), "PHOTOSEEK_HOME": str(work / "home"), "PHOTOSEEK_CACHE": str(work / "cache")}

        def index() -> subprocess.CompletedProcess[str]:
            return subprocess.run([*prefix, sys.executable, str(ROOT / "image_search.py"), "--mode", "index", "--model",
                                   TEST_MODEL, "--image-dir", str(photos), "-q"], capture_output=True, text=True, timeout=300,
                                  env={**os.environ, **env})

        first = index()
        assert first.returncode == 0 and "indexed 6" in first.stdout, first.stderr
        unreadable = sorted(photos.glob("*.png"))[0]
        unreadable.chmod(0)
        unreadable.touch()  # changed, so the next run must read it
        sub.chmod(stat.S_IWUSR)  # neither listable nor enterable
        second = index()
        assert second.returncode == 0, second.stderr
        assert f"failed: {unreadable}: permission denied" in second.stderr
        assert f"failed: {sub}: cannot open folder: Permission denied" in second.stderr or \
            f"failed: {sub}: cannot list folder: Permission denied" in second.stderr
        # the unlistable folder's two images keep their rows: a permission problem never deletes data
        assert "removed 0" in second.stdout and "unchanged 3" in second.stdout
        sub.chmod(0o755)
        stats = subprocess.run([*prefix, sys.executable, str(ROOT / "image_search.py"), "--mode", "stats", "--json"],
                               capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        assert json.loads(stats.stdout)["total_images"] == 6
    finally:
        for path in [work, *work.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(work, ignore_errors=True)


IMPORTS_AFTER = r"""
import json, os, runpy, sys
sys.argv = ["image_search.py", *json.loads(sys.argv[1])]
real_exit = os._exit

def report(code):
    print(json.dumps({{"code": code, "heavy": sorted(m for m in ("torch", "torchvision", "open_clip", "fastapi") if m in sys.modules)}}))
    sys.stdout.flush()

def report_then_exit(code):  # the CLI ends with os._exit once its output is flushed
    report(code)
    real_exit(code)

os._exit = report_then_exit
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as done:  # argparse's --help and usage errors exit before the CLI's own end
    report(done.code)
"""


@pytest.mark.parametrize("args", [["--help"], ["--mode", "stats"], ["--mode", "stats", "--json"],
                                  ["--mode", "index", "--image-dir", "/no/such/folder"]])
def test_help_stats_and_argument_errors_import_no_torch(args: list[str], tmp_path: Path) -> None:
    script = IMPORTS_AFTER.format(script=str(ROOT / "image_search.py"))
    done = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PHOTOSEEK_HOME": str(tmp_path / "home")})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], (args, result, done.stderr[-1000:])
    assert result["code"] == (2 if "index" in args else 0), done.stderr


def test_a_missing_folder_among_several_is_refused_before_anything_is_indexed(tmp_path: Path, scenes: Path) -> None:
    home = tmp_path / "home"
    done = run_cli("--mode", "index", "--model", TEST_MODEL, "--image-dir", str(scenes), "--image-dir", "/no/such/folder",
                   home=home, check=False)
    assert done.returncode == 2 and "image folder '/no/such/folder' does not exist or is not a folder" in done.stderr
    stats = json.loads(run_cli("--mode", "stats", "--json", home=home).stdout)
    assert stats["total_images"] == 0  # the first folder was not indexed half-way through a failing command


@pytest.mark.slow
def test_a_large_lite_library_is_told_about_a_milvus_server(tmp_path: Path, scenes: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from photoseek import cli

    monkeypatch.setenv("PHOTOSEEK_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli, "LARGE_FOR_LITE", 24)  # the real threshold is 200,000 rows
    assert cli.main(["--mode", "index", "--model", TEST_MODEL, "--image-dir", str(scenes), "--device", "cpu"]) == 0
    assert "note: 24 photos in Milvus Lite" in capsys.readouterr().err
    monkeypatch.setattr(cli, "LARGE_FOR_LITE", 25)
    assert cli.main(["--mode", "index", "--image-dir", str(scenes)]) == 0
    assert "Milvus Lite" not in capsys.readouterr().err
