"""Indexing on Ray (photoseek/indexing/ray_index.py) against local mode, on a real local Ray (2 CPUs) and
the real Milvus 2.3.5 server: the same rows, vectors and search results; a killed encoder worker; an
incremental re-run; manifests in each format; Milvus Lite refused."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, TEST_MODEL
from PIL import Image

from image_search import ImageSearchEngine
from milvus_store import MilvusStore, metadata_from_row
from photoseek.errors import InvalidArgumentError

QUERIES = ["a red circle", "a blue square", "a green triangle", "a yellow star"]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    from photoseek.indexing.ray_index import start_ray

    try:
        start_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as error:
        # a start that fails twice on CI leaves its reason only in the session's logs, gone with the machine
        pytest.fail(f"a local Ray did not start: {error}\n{ray_start_logs(str(error))}")
    yield ray
    ray.shutdown()


def ray_start_logs(error: str) -> str:
    """The ends of the GCS's and raylet's logs of the session a failed start names (else the latest)."""
    named = re.search(r"(/\S+/session_[^/\s]+)/", error)
    logs = Path(named.group(1) if named else "/tmp/ray/session_latest") / "logs"
    return "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-2000:]}"
                     for log in sorted(logs.glob("gcs_server.*")) + sorted(logs.glob("raylet.*")))


def test_a_ray_start_that_misses_rays_fixed_wait_is_repeated_once_and_other_failures_are_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray gives its raylet a fixed 30 s to register and its GCS 30 s (a setting) to publish its port; a busy small
    # machine sometimes misses either. Neither can be provoked on demand, so ray.init is replaced by one that raises
    # Ray's own message a set number of times
    ray = pytest.importorskip("ray")
    from photoseek.indexing.ray_index import (
        GCS_PORT_WAIT_S,
        GCS_PORT_WAIT_SETTING,
        RAY_PORT_FILE_TIMED_OUT,
        RAY_START_TIMED_OUT,
        start_ray,
    )

    calls: list[str] = []
    monkeypatch.delenv(GCS_PORT_WAIT_SETTING, raising=False)

    def init_failing(times: int, message: str) -> Any:
        def init(**options: Any) -> None:
            # Ray reads how long to wait for its GCS from the environment while ray.init starts the head
            assert os.environ.get(GCS_PORT_WAIT_SETTING) == expected_wait
            calls.append(f"init {options}")
            if calls.count(f"init {options}") <= times:
                raise Exception(f"{message}. This could happen because some of the raylet failed to startup")
        return init

    expected_wait = str(GCS_PORT_WAIT_S)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(ray, "init", init_failing(1, RAY_START_TIMED_OUT))
    start_ray(num_cpus=2)
    assert calls == ["init {'num_cpus': 2}", "shutdown", "init {'num_cpus': 2}"]
    assert GCS_PORT_WAIT_SETTING not in os.environ  # the user's environment is left as it was

    # the GCS publishing its port late (the message Ray gives, with the session's file name)
    calls.clear()
    late_gcs = f"{RAY_PORT_FILE_TIMED_OUT} /tmp/ray/session_2026-12-01_21-59-18_215581_24711/gcs_server_port_d21c03"
    monkeypatch.setattr(ray, "init", init_failing(1, late_gcs))
    start_ray(num_cpus=2)
    assert calls == ["init {'num_cpus': 2}", "shutdown", "init {'num_cpus': 2}"]

    # a wait the user chose is kept, during the start and after it
    calls.clear()
    expected_wait = "7"
    monkeypatch.setenv(GCS_PORT_WAIT_SETTING, "7")
    monkeypatch.setattr(ray, "init", init_failing(0, RAY_START_TIMED_OUT))
    start_ray(num_cpus=2)
    assert calls == ["init {'num_cpus': 2}"] and os.environ[GCS_PORT_WAIT_SETTING] == "7"
    monkeypatch.delenv(GCS_PORT_WAIT_SETTING)
    expected_wait = str(GCS_PORT_WAIT_S)

    calls.clear()
    monkeypatch.setattr(ray, "init", init_failing(2, RAY_START_TIMED_OUT))
    with pytest.raises(Exception, match=RAY_START_TIMED_OUT):
        start_ray(num_cpus=2)
    assert calls == ["init {'num_cpus': 2}", "shutdown", "init {'num_cpus': 2}"]

    calls.clear()
    monkeypatch.setattr(ray, "init", init_failing(1, "Could not find any running Ray instance"))
    with pytest.raises(Exception, match="Could not find any running Ray instance"):
        start_ray(address="auto")
    assert calls == ["init {'address': 'auto'}"]


def test_a_real_ray_reads_the_gcs_wait_and_its_late_gcs_is_retried_once_then_reported() -> None:
    # the fake above stands in for Ray's messages; this start, on the real Ray, proves Ray reads the setting
    # start_ray passes and raises the message start_ray repeats on. A wait of 0 s makes the GCS always late.
    # In its own process: the GCS of a failed start lives until its driver exits
    pytest.importorskip("ray")
    from photoseek.indexing.ray_index import GCS_PORT_WAIT_SETTING, RAY_PORT_FILE_TIMED_OUT

    # Ray's socket paths must stay under 108 bytes: pytest's tmp_path is too deep
    with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp") as ray_dir:
        start = ("from photoseek.indexing.ray_index import start_ray\n"
                 f"start_ray(num_cpus=1, include_dashboard=False, _temp_dir={ray_dir!r})")
        done = subprocess.run([sys.executable, "-c", start], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, GCS_PORT_WAIT_SETTING: "0"})
        assert done.returncode != 0 and RAY_PORT_FILE_TIMED_OUT in done.stderr, done.stderr[-2000:]
        assert len(list(Path(ray_dir).glob("session_2*"))) == 2  # two starts, each its own session


def add_bad_files(folder: Path) -> None:
    (folder / "bad").mkdir()
    (folder / "bad" / "empty.jpg").write_bytes(b"")
    (folder / "bad" / "notes.png").write_text("not an image")
    data = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(data, format="JPEG")
    (folder / "bad" / "truncated.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])


def rows_of(uri: str, collection: str) -> dict[str, dict[str, Any]]:
    store = MilvusStore(uri, collection_name=collection)
    try:
        paths = [f.path for f in store.iter_files()]
        from milvus_store import path_id

        return {row["path"]: row for row in store.get([path_id(p) for p in paths], with_vectors=True)}
    finally:
        store.close()


def ray_engine(uri: str, collection: str, **options: Any) -> ImageSearchEngine:
    return ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=uri, collection_name=collection, device="cpu",
                             batch_size=8, **options)


# nested folders, so that the tree is cut into parts
LIBRARY_PARTS = {"2019/06 Kyoto": (60, 11), "2019/07": (50, 12), "2020": (30, 13), "": (10, 14)}
LIBRARY_SIZE = sum(count for count, _ in LIBRARY_PARTS.values())


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 scenes in nested folders (so the tree is cut into parts) plus bad files."""
    from make_scenes import write_scenes

    root = tmp_path_factory.mktemp("ray_library")
    for part, (count, seed) in LIBRARY_PARTS.items():
        write_scenes(root / part, count=count, seed=seed)
    add_bad_files(root)
    return root


@pytest.mark.slow
def test_ray_mode_gives_local_modes_rows_vectors_failures_and_results(ray_local: Any, library: Path, milvus_server: str,
                                                                      collection_name: str) -> None:
    from photoseek.indexing.ray_index import RayOptions

    with ray_engine(milvus_server, collection_name + "_local") as local:
        local_summary = local.index_directory(library)
        local_results = local.search_batch(QUERIES, top_k=10)
    with ray_engine(milvus_server, collection_name + "_ray") as engine:
        summary = engine.index_directory(library, ray=RayOptions())
        ray_results = engine.search_batch(QUERIES, top_k=10)

    assert summary.indexed == local_summary.indexed == LIBRARY_SIZE
    assert [(f.path, f.reason) for f in summary.failed] == sorted((f.path, f.reason) for f in local_summary.failed)
    assert {Path(f.path).name for f in summary.failed} == {"empty.jpg", "notes.png", "truncated.jpg"}
    ours, theirs = rows_of(milvus_server, collection_name + "_ray"), rows_of(milvus_server, collection_name + "_local")
    assert sorted(ours) == sorted(theirs) and len(ours) == LIBRARY_SIZE
    for path, row in ours.items():
        other = theirs[path]
        assert (row["size"], row["mtime"], row["fingerprint"]) == (other["size"], other["mtime"], other["fingerprint"])
        assert metadata_from_row(row) == metadata_from_row(other) is not None  # the header read in both modes
        a, b = np.asarray(row["vector"]), np.asarray(other["vector"])
        assert float(a @ b) >= 0.999 and abs(float(np.linalg.norm(a)) - 1) < 1e-3
    for a, b in zip(ray_results, local_results, strict=True):
        assert [r.path for r in a] == [r.path for r in b]


@pytest.mark.slow
def test_a_rerun_touches_only_what_changed(ray_local: Any, tmp_path: Path, milvus_server: str, collection_name: str) -> None:
    from make_scenes import write_scenes

    from photoseek.indexing.ray_index import RayOptions

    library = tmp_path / "library"
    write_scenes(library / "a", count=30, seed=21)
    write_scenes(library / "b", count=30, seed=22)
    with ray_engine(milvus_server, collection_name) as engine:
        first = engine.index_directory(library, ray=RayOptions())
        assert (first.indexed, first.unchanged, first.removed) == (60, 0, 0)
        before = rows_of(milvus_server, collection_name)

        changed = library / "a" / "scene_00003.png"
        shutil.copy(library / "b" / "scene_00004.png", changed)  # new content under an old name
        (library / "b" / "scene_00005.png").unlink()
        shutil.copy(library / "b" / "scene_00006.png", library / "b" / "new.png")
        os.utime(library / "a" / "scene_00007.png", (time.time(), time.time() + 5))  # mtime alone: encoded again, as locally
        (library / "b" / "gone").mkdir()  # an empty new folder changes nothing

        second = engine.index_directory(library, ray=RayOptions())
        after = rows_of(milvus_server, collection_name)

    assert (second.indexed, second.unchanged, second.removed, second.failed) == (3, 57, 1, [])
    assert sorted(after) == sorted({*before, str(library / "b" / "new.png")} - {str(library / "b" / "scene_00005.png")})
    assert engine_count(milvus_server, collection_name) == 60
    new_vector = np.asarray(after[str(changed)]["vector"])
    assert float(new_vector @ np.asarray(after[str(library / "b" / "scene_00004.png")]["vector"])) > 0.9999
    assert float(new_vector @ np.asarray(before[str(changed)]["vector"])) < 0.999
    untouched = str(library / "a" / "scene_00010.png")
    assert after[untouched]["mtime"] == before[untouched]["mtime"] and after[untouched]["vector"] == before[untouched]["vector"]


def encoder_worker_pids() -> list[int]:
    """Ray names a worker process after the actor it runs (ray::MapWorker(MapBatches(EncodeWithSpec)))."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"EncodeWithSpec" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def engine_count(uri: str, collection: str) -> int:
    store = MilvusStore(uri, collection_name=collection)
    try:
        return store.count()
    finally:
        store.close()


@pytest.mark.slow
def test_an_encoder_worker_killed_mid_run_costs_time_not_rows(ray_local: Any, library: Path, milvus_server: str,
                                                             collection_name: str) -> None:
    from photoseek.indexing.ray_index import RayOptions

    killed: list[int] = []
    finished = threading.Event()

    def kill_the_encoder_once_rows_arrive() -> None:
        while not finished.is_set() and not killed:
            if engine_count(milvus_server, collection_name) > 0:
                for pid in encoder_worker_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.05)

    with ray_engine(milvus_server, collection_name) as engine:
        engine.store.open_collection(TEST_MODEL, 64, create=True)
        killer = threading.Thread(target=kill_the_encoder_once_rows_arrive)
        killer.start()
        try:
            summary = engine.index_directory(library, ray=RayOptions())
        finally:
            finished.set()
            killer.join()
        assert killed, "the run ended before an encoder worker could be killed"
        count = engine.store.count()
        rerun = engine.index_directory(library, ray=RayOptions())
    assert summary.indexed >= LIBRARY_SIZE and count == LIBRARY_SIZE  # a retried batch is written again, never twice
    assert (rerun.indexed, rerun.unchanged) == (0, LIBRARY_SIZE)


@pytest.mark.slow
def test_manifests_in_each_format_with_descriptions_and_gone_files(ray_local: Any, tmp_path: Path, milvus_server: str,
                                                                   collection_name: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from make_scenes import write_scenes

    from photoseek.indexing.ray_index import RayOptions

    photos = tmp_path / "photos"
    write_scenes(photos, count=12, seed=31)
    names = sorted(p.name for p in photos.glob("*.png"))
    # relative to the manifest's folder, absolute, and file:// URIs all name the same files
    listed = [f"photos/{n}" if i % 3 == 0 else str(photos / n) if i % 3 == 1 else (photos / n).as_uri()
              for i, n in enumerate(names)]
    (tmp_path / "first.csv").write_text("path,description\n" + "".join(f"{p},\n" for p in listed) + "photos/missing.png,\n")
    with ray_engine(milvus_server, collection_name) as engine:
        first = engine.index_on_ray(manifest=str(tmp_path / "first.csv"), ray=RayOptions())
        assert (first.indexed, [(Path(f.path).name, f.reason) for f in first.failed]) == (12, [("missing.png", "file not found")])

        pq.write_table(pa.table({"path": listed}), tmp_path / "same.parquet")
        second = engine.index_on_ray(manifest=str(tmp_path / "same.parquet"), ray=RayOptions())
        assert (second.indexed, second.unchanged, second.removed) == (0, 12, 0)

        (photos / names[0]).unlink()
        lines = [{"path": p, "description": "外婆家 Alice" if i == 1 else ""} for i, p in enumerate(listed)]
        (tmp_path / "third.jsonl").write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines))
        third = engine.index_on_ray(manifest=str(tmp_path / "third.jsonl"), ray=RayOptions())
        assert (third.indexed, third.unchanged, third.removed, third.descriptions_updated) == (0, 11, 1, 1)
        rows = rows_of(milvus_server, collection_name)
        assert sorted(rows) == sorted(str(photos / n) for n in names[1:])
        assert rows[str(photos / names[1])]["description"] == "外婆家 Alice"

        (tmp_path / "nopath.csv").write_text("file\nphotos/a.png\n")
        with pytest.raises(InvalidArgumentError, match="no 'path' column"):
            engine.index_on_ray(manifest=str(tmp_path / "nopath.csv"), ray=RayOptions())


@pytest.mark.slow
def test_the_cli_indexes_on_ray_and_answers_searches(tmp_path: Path, milvus_server: str, collection_name: str) -> None:
    pytest.importorskip("ray")
    from make_scenes import write_scenes

    write_scenes(tmp_path / "photos", count=20, seed=41)
    common = ["--milvus-uri", milvus_server, "--collection", collection_name, "--model", TEST_MODEL, "--device", "cpu"]
    indexed = subprocess.run([sys.executable, str(ROOT / "image_search.py"), "--mode", "index", "--ray",
                              "--image-dir", str(tmp_path / "photos"), "--quiet", *common],
                             capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    assert indexed.returncode == 0, indexed.stderr[-3000:]
    assert indexed.stdout.startswith("indexed 20, unchanged 0, removed 0, failed 0")
    found = subprocess.run([sys.executable, str(ROOT / "image_search.py"), "--mode", "search", "--query", "a red circle",
                            "--paths-only", *common], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0 and len(found.stdout.split()) == 5


def test_milvus_lite_and_a_manifest_without_ray_are_refused_by_name(tmp_path: Path) -> None:
    from photoseek.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for argv, message in [
        (["--milvus-uri", str(tmp_path / "x.db"), "--ray"], "--ray needs a Milvus server"),
        (["--milvus-uri", "http://127.0.0.1:9", "--manifest", "m.csv"], "--manifest is read on a Ray cluster"),
        (["--milvus-uri", "http://127.0.0.1:9", "--ray", "--ray-encoders", "0"], "--ray-encoders must be at least 1"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            from photoseek.cli import _check_index_arguments, build_parser

            _check_index_arguments(build_parser().parse_args(["--mode", "index", "--image-dir", str(photos), *argv]))
    assert main(["--mode", "index", "--image-dir", str(photos), "--ray", "--milvus-uri", str(tmp_path / "x.db")]) == 2

    from photoseek.indexing.ray_index import EncoderSpec, RayIndexer, RayOptions

    store = MilvusStore(str(tmp_path / "x.db"))
    try:  # the Python API refuses it too, before Ray starts
        with pytest.raises(InvalidArgumentError, match="Milvus Lite file .* open to one process only"):
            RayIndexer(EncoderSpec("local", TEST_MODEL, 8), store, RayOptions())
    finally:
        store.close()
