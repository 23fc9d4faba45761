"""Shared fixtures: the shipped test model, generated scenes, real photographs, and real Milvus
instances (Lite in a temporary folder; a Milvus 2.3.5 standalone server started for the session)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from http_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def import_blocker(folder: Path, *packages: str) -> str:
    """A folder whose sitecustomize.py hides `packages` from a child process's imports, as if not installed:
    put the returned path on the child's PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {packages!r}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n")
    return str(folder)
# The package is installed (pip install -e .); the tests' own helpers (tests/, tools/) are on pytest's
# path, and child processes that tests start get the same through PYTHONPATH.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT / "tools"), *filter(None, [os.environ.get("PYTHONPATH")])])

# ONNX exports go to a cache of this test session (children inherit it), never the user's own. The
# mutation runs (bench/mutation_report.py) start a session per mutant and pass a cache they keep, so
# the test model is exported once for all of them.
_OWN_CACHE = "PHOTOSEEK_TEST_CACHE" not in os.environ
os.environ["PHOTOSEEK_CACHE"] = os.environ.get("PHOTOSEEK_TEST_CACHE") or tempfile.mkdtemp(prefix="image-search-test-cache-")
# How the engine tests run the test model: "auto" (what users get: ONNX text, torch images on CPU) or
# "onnx" (no torch import: the mutation runs, where each mutant's session starts from nothing).
TEST_RUNTIME = os.environ.get("PHOTOSEEK_TEST_RUNTIME", "auto")

TEST_MODEL = "shapes-tiny::v1"
# A test that uses one of these needs Milvus or loads a model: never in the fast tier (-m "not slow").
HEAVY_FIXTURES = {"test_encoder", "milvus_server", "held_out_scenes", "installed"}


# CI sets this: every optional part (the Milvus server, clip-server and clip-client, Chromium) must be
# there, so a skipped test is a failure instead of one quiet line. A local run may still skip.
REQUIRE_ALL = os.environ.get("PHOTOSEEK_REQUIRE_ALL") == "1"
_skipped: list[str] = []


# Disk is the scarce resource on CI machines (a full disk once failed 40 tests at once). Each test's
# temporary folder is removed when it passes (tmp_path_retention_policy = "failed"); this records how
# much disk each test held at its peak, so the summary names the heaviest ones and the session's peak.
_disk_at_start = shutil.disk_usage(tempfile.gettempdir()).used
_disk_peak = 0
_disk_by_test: dict[str, int] = {}
_disk_before: int = 0


def pytest_runtest_logstart(nodeid: str) -> None:
    global _disk_before
    _disk_before = shutil.disk_usage(tempfile.gettempdir()).used


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield
    used = shutil.disk_usage(tempfile.gettempdir()).used  # at the end of the call, before teardown frees
    # carried on the report, so the summary sees it whether the test ran here or in a pytest-xdist worker
    # (with workers, a test's growth includes what the other workers wrote meanwhile)
    item.user_properties += [("disk_used", used - _disk_at_start), ("disk_grown", used - _disk_before)]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _disk_peak
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")
    if report.when == "call":
        measured = dict(report.user_properties)
        if "disk_used" in measured:
            _disk_peak = max(_disk_peak, int(measured["disk_used"]))
            _disk_by_test[report.nodeid] = int(measured["disk_grown"])


@pytest.fixture(autouse=True)
def _drop_large_exports() -> Iterator[None]:
    """ONNX exports of real architectures (ViT-B-32: ~600 MB each, keyed by the test's own weights) go
    once the test that made them ends; small ones (the shipped test model's) stay for the session."""
    cache = Path(os.environ["PHOTOSEEK_CACHE"]) / "onnx"
    before = set(cache.iterdir()) if cache.is_dir() else set()
    yield
    for folder in (set(cache.iterdir()) if cache.is_dir() else set()) - before:
        if sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) > 50 * 2**20:
            shutil.rmtree(folder, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    heaviest = sorted(((n, g) for n, g in _disk_by_test.items() if g > 10 * 2**20), key=lambda pair: -pair[1])[:5]
    terminalreporter.write_line(f"disk: peak {_disk_peak / 2**20:+.0f} MiB over the session start; "
                                f"{shutil.disk_usage(tempfile.gettempdir()).free / 2**30:.1f} GiB free; heaviest: "
                                + (", ".join(f"{nodeid.split('::', 1)[-1]} {grown / 2**20:+.0f} MiB" for nodeid, grown in heaviest)
                                   or "no test held over 10 MiB"))
    if _skipped:
        terminalreporter.section("skipped, but PHOTOSEEK_REQUIRE_ALL=1 requires every part")
        for line in _skipped:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _OWN_CACHE:
        shutil.rmtree(os.environ["PHOTOSEEK_CACHE"], ignore_errors=True)
    if _skipped and exitstatus == 0:
        session.exitstatus = 1


# The suite runs in pytest-xdist workers (addopts: -n auto --dist loadgroup; most of its time is spent
# waiting on servers and child processes, not computing). The tests of the one Milvus server (a session
# fixture: a second 2.3.5 standalone on the machine never comes up, its embedded etcd binds the fixed
# peer port 2380) and of Ray (one local cluster at a time) go to one worker together; the rest are shared out.
SHARED_SERVICES = "milvus-server-and-ray"
RAY_TEST_FILES = {"test_ray_index.py", "test_ray_parts.py"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups and -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        on_server = getattr(getattr(item, "callspec", None), "params", {}).get("store_uri") == "server"
        fixtures = set(getattr(item, "fixturenames", ()))
        if on_server:
            item.add_marker(pytest.mark.server)
        if on_server or HEAVY_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if on_server or "milvus_server" in fixtures or item.path.name in RAY_TEST_FILES:
            item.add_marker(pytest.mark.xdist_group(SHARED_SERVICES))
    if "MUTANT_UNDER_TEST" in os.environ:
        items[:] = _mutation_order(items, os.environ["MUTANT_UNDER_TEST"])


_UNGROUPED = "pytest-xdist did not keep the Milvus server and Ray tests in one worker (pytest-dev/pytest-xdist#1386: " \
    "pytest < 9.2 is required, see requirements-dev.txt; or run with -n 0)"
_lost_groups: set[str] = set()


def pytest_collection_finish(session: pytest.Session) -> None:
    """In a worker, the groups must have reached pytest-xdist (it marks them in the test ids): with a
    pytest it cannot do that for, two workers would each start a Milvus server, and the second fails."""
    if "PYTEST_XDIST_WORKER" in os.environ and session.config.getvalue("loadgroup"):
        _lost_groups.update(item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.nodeid in _lost_groups:  # before any fixture starts a second server
        pytest.fail(_UNGROUPED, pytrace=False)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """-n auto: a worker per core, at most four (each loads models; more would trade memory for little)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


# Under mutation (mutmut names the mutant in MUTANT_UNDER_TEST) the tests that reach the mutated
# function come as a set, in no useful order, and the run stops at the first failure: the mutated
# module's own test file goes first (its tests are the likeliest to fail, and fail soonest), and each
# file's tests stay together so its module fixtures are made once.
OWN_TEST_FILES = {
    "photoseek.store.milvus": "test_store.py",
    "photoseek.engine.engine": "test_engine.py",
    "photoseek.engine.ranking": "test_relevance.py",
    "photoseek.indexing.scan": "test_scan.py",
    "photoseek.indexing.decode": "test_image_loading.py",
    "photoseek.indexing.pipeline": "test_engine.py",
    "photoseek.indexing.perceptual": "test_duplicates.py",
    "photoseek.store.vector_cache": "test_vector_cache.py",
    "photoseek.engine.duplicates": "test_duplicates.py",
    "photoseek.photo_metadata": "test_metadata.py",
    "photoseek.query": "test_composed.py",
    "photoseek.encoders.clip_tokenizer": "test_onnx_runtime.py",
    "photoseek.encoders.preprocess": "test_onnx_runtime.py",
    "photoseek.encoders.service": "test_service.py",
    "photoseek.indexing.files": "test_serving_checks.py",
    "photoseek.servers.request_filters": "test_serving_checks.py",
}


def _mutation_order(items: list[pytest.Item], mutant: str) -> list[pytest.Item]:
    module = mutant.split(".x", 1)[0]
    own = OWN_TEST_FILES.get(module)
    files: dict[str, int] = {}
    for item in items:
        files.setdefault(item.path.name, len(files))
    return sorted(items, key=lambda item: (item.path.name != own, files[item.path.name]))


HELD_OUT_SEED = 424242  # not the training seed (0) nor the training script's held-out seed


@pytest.fixture(scope="session")
def test_encoder():  # type: ignore[no-untyped-def]
    from clip_encoder import CLIPEncoder

    # its torch internals are tested; the mutation runs take only tests that use it as an encoder
    encoder = CLIPEncoder(mode="local", model_name=TEST_MODEL, device="cpu", runtime="onnx" if TEST_RUNTIME == "onnx" else "torch")
    yield encoder
    encoder.close()


@pytest.fixture(scope="session")
def held_out_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from make_scenes import write_scenes

    folder = tmp_path_factory.mktemp("held_out_scenes")
    write_scenes(folder, count=500, seed=HELD_OUT_SEED)
    return folder


@pytest.fixture()
def scenes(tmp_path: Path) -> Path:
    """A small fresh folder of scenes that a test may change."""
    from make_scenes import write_scenes

    folder = tmp_path / "scenes"
    write_scenes(folder, count=24, seed=7)
    return folder


def captions_of(folder: Path) -> dict[str, dict[str, str]]:
    return json.loads((folder / "captions.json").read_text(encoding="utf-8"))


PHOTO_NAMES = ["astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "camera", "coins", "moon", "hubble_deep_field", "retina"]


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real photographs shipped inside scikit-image, saved as JPEG files."""
    import skimage.data
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in PHOTO_NAMES:
        array = getattr(skimage.data, name)()
        if isinstance(array, tuple):  # stereo pairs
            array = array[0]
        path = folder / f"{name}.jpg"
        Image.fromarray(array).convert("RGB").save(path, quality=92)
        paths[name] = path
    return paths


# ------------------------------------------------------------------------------ Milvus


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A genuine Milvus 2.3.5 standalone server (pip package `milvus`), for the server path."""
    binary = shutil.which("milvus-server") or str(Path(sys.executable).parent / "milvus-server")
    if not Path(binary).exists():
        pytest.skip("milvus-server is not installed (pip install milvus==2.3.5)")
    data = tmp_path_factory.mktemp("milvus_server")
    port = free_port()
    log = open(data / "server.log", "wb")
    process = subprocess.Popen([binary, "--data", str(data), "--proxy-port", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(uri, process, data / "server.log")
        yield uri
    finally:
        _stop_server(process)
        log.close()


def _wait_ready(uri: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    from pymilvus import MilvusClient

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"milvus-server exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            client = MilvusClient(uri=uri, timeout=2)
            client.list_collections()
            client.close()
            return
        except Exception:
            time.sleep(1)
    standalone = "".join(f.read_text(errors="replace")[-1500:] for f in sorted(log.parent.glob("logs/*.log")))
    raise RuntimeError(f"milvus-server not ready after {timeout}s: {log.read_text(errors='replace')[-2000:]}\n{standalone}")


def _stop_server(process: subprocess.Popen[bytes]) -> None:
    # SIGINT lets the wrapper stop its standalone child; SIGTERM can orphan it.
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever child is left in its session
    except ProcessLookupError:
        pass


@pytest.fixture(params=["lite", "server"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests run against Milvus Lite and a Milvus server."""
    if request.param == "lite":
        return str(tmp_path / "store.db")
    return str(request.getfixturevalue("milvus_server"))


_collection_counter = iter(range(10**6))


@pytest.fixture()
def collection_name() -> str:
    return f"t{os.getpid()}_{next(_collection_counter)}"


def create_schema_1_collection(uri: str, name: str, dim: int, meta: dict[str, object]) -> None:
    """An empty collection as image_search wrote it before photo metadata was kept (schema version 1)."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    for field, kind, extra in (("id", DataType.INT64, {"is_primary": True}), ("path", DataType.VARCHAR, {"max_length": 4096}),
                               ("description", DataType.VARCHAR, {"max_length": 8192}), ("size", DataType.INT64, {}),
                               ("mtime", DataType.DOUBLE, {}), ("fingerprint", DataType.VARCHAR, {"max_length": 64}),
                               ("ext", DataType.VARCHAR, {"max_length": 16}), ("vector", DataType.FLOAT_VECTOR, {"dim": dim})):
        schema.add_field(field, kind, **extra)
    client = MilvusClient(uri=uri)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Session",
                             properties={"image_search.meta": json.dumps({**meta, "schema_version": 1})})
    client.close()


def record_milvus_connections(monkeypatch: pytest.MonkeyPatch, lite_database: str | None = None) -> list[dict[str, object]]:
    """The arguments of every MilvusClient opened from now on. Each is answered by Milvus Lite
    (`lite_database`, else the uri asked for): no server with accounts runs here."""
    import pymilvus

    connected: list[dict[str, object]] = []
    real_client = pymilvus.MilvusClient

    class RecordingClient(real_client):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: object) -> None:
            connected.append(kwargs)
            super().__init__(uri=lite_database or str(kwargs["uri"]))

    monkeypatch.setattr(pymilvus, "MilvusClient", RecordingClient)
    return connected


def write_dng(path: Path, photo: Path, size: tuple[int, int] = (320, 212), *, preview: Literal["jpeg", "bitmap"] | None = None,
              orientation: int = 1, red_sensitivity: float = 1.0, taken: str | None = None) -> np.ndarray:
    """A DNG laid out the way cameras write one; returns the RGB its sensor data came from.

    The sensor data is `photo`'s pixels at `size` sampled as an RGGB Bayer mosaic (12 bits), its red
    samples scaled by `red_sensitivity` and AsShotNeutral saying so (the camera's white balance undoes
    it). `taken`: the DateTime tag ("YYYY:MM:DD HH:MM:SS"). With `preview`, IFD 0 holds a full-size RGB
    preview of the photo and the sensor data moves to a SubIFD, as in a camera's file. `orientation` is
    the TIFF Orientation tag.
    Written with tifffile (a real TIFF writer); the JPEG preview's strip is put in place afterwards,
    since tifffile writes JPEG only through imagecodecs."""
    import struct

    import tifffile
    from PIL import Image

    rgb = np.asarray(Image.open(photo).convert("RGB").resize(size))
    sensor = rgb.astype(np.float64) * np.array([red_sensitivity, 1.0, 1.0])
    height, width = rgb.shape[:2]
    mosaic = np.zeros((height, width), dtype=np.uint16)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2] = sensor[0::2, 0::2, 0], sensor[0::2, 1::2, 1]
    mosaic[1::2, 0::2], mosaic[1::2, 1::2] = sensor[1::2, 0::2, 1], sensor[1::2, 1::2, 2]
    identity = (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)  # ColorMatrix1 as rationals
    neutral = (round(red_sensitivity * 1000), 1000, 1, 1, 1, 1)
    Tags = list[tuple[int, str, int, object, bool]]  # tifffile's extratags: code, type, count, value, write once
    camera: Tags = [(50706, "B", 4, (1, 4, 0, 0), False), (50707, "B", 4, (1, 2, 0, 0), False),  # DNG version, backward
                    (271, "s", 0, "Canon", False), (272, "s", 0, "EOS R5", False), (274, "H", 1, (orientation,), False),
                    (50721, "2i", 9, identity, False), (50728, "2I", 3, neutral, False), (50778, "H", 1, (21,), False)]  # D65
    if taken is not None:
        camera.append((306, "s", 0, taken, False))
    cfa: Tags = [(33421, "H", 2, (2, 2), False), (33422, "B", 4, (0, 1, 1, 2), False),  # RGGB
                 (50714, "I", 1, (0,), False), (50717, "I", 1, (4095,), False)]  # black and white levels
    with tifffile.TiffWriter(path) as tif:
        if preview is None:
            tif.write(mosaic << 4, photometric=32803, subfiletype=0, extratags=camera + cfa)
        else:
            tif.write(rgb, photometric="rgb", subfiletype=1, subifds=1, rowsperstrip=height, extratags=camera)
            tif.write(mosaic << 4, photometric=32803, subfiletype=0, extratags=cfa)
    if preview == "jpeg":
        jpeg = io.BytesIO()
        Image.fromarray(rgb).save(jpeg, format="JPEG", quality=95)
        data = bytearray(path.read_bytes())
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            start = tags["StripOffsets"].value[0]
            data[start:start + len(jpeg.getvalue())] = jpeg.getvalue()  # the JPEG is smaller than the bitmap it replaces
            count_format = "<I" if tags["StripByteCounts"].dtype == 4 else "<H"
            for name, value, value_format in (("Compression", 7, "<H"), ("PhotometricInterpretation", 6, "<H"),
                                              ("StripByteCounts", len(jpeg.getvalue()), count_format)):
                struct.pack_into(value_format, data, tags[name].valueoffset, value)
        path.write_bytes(bytes(data))
    return rgb
