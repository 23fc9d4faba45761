"""How the store's costs grow with the number of photos: 10k, 100k (and 1M) rows, Milvus Lite and a server.

    python bench/scale.py                                  # 10k and 100k rows, Lite and the 2.3.5 server
    python bench/scale.py --sizes 1000000 --stores lite    # one size, one store

Rows are what the indexer writes (512-d unit vectors, synthetic: the store's costs do not depend on
what they mean; paths in 1,000 dated folders; size, mtime, fingerprint), through MilvusStore itself.
For each store and size it measures, and prints one table:

- fill: upsert rate (rows/s, batches of 2,000 as the indexer's writer sends them) and on-disk size;
- one-shot: a fresh process that imports the store, opens the collection and searches once (what a
  CLI search pays for its store part), wall time split into import / open / search, and its peak RSS;
- warm: p50/p95 of a top-10 search in a long-lived process (the HTTP server's case: Lite with the
  in-memory vector copy the server keeps), unfiltered and with a folder filter (which Milvus answers);
  then the same through ImageSearchEngine.search with a text query (ViT-B-32, random weights, its
  text tower included), and through a real `--mode serve` over HTTP, with the server's peak RSS;
- bookkeeping: reading every row's path/size/mtime and comparing them with the files' (an unchanged
  re-run of the indexer, without the directory walk);
- recall@10 and @100 of the unfiltered search against exact search over the same vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from image_search import ImageSearchEngine
    from milvus_store import MilvusStore

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

DIM = 512
QUERIES = ["a cat on a sofa", "beach at sunset", "birthday cake", "一只可爱的猫咪", "snowy mountain", "red car"]
COLLECTION = "scale_bench"
MODEL = ""  # set in main(): ViT-B-32 with random weights, as a model folder
BATCH = 2000
FOLDERS = 1000

ONE_SHOT = r"""
import json, sys, time
started = time.perf_counter()
import numpy as np
from milvus_store import MilvusStore
imported = time.perf_counter()
store = MilvusStore(sys.argv[1], collection_name=sys.argv[2])
info = store.collection_info()
store.count()  # loads the collection (a server) / opens the segments (Lite), as a search's first call does
opened = time.perf_counter()
vector = np.random.default_rng(1).normal(size=(1, info.dim)).astype(np.float32)
hits = store.search(vector / np.linalg.norm(vector), 10)
searched = time.perf_counter()
assert len(hits[0]) == 10
store.search(vector / np.linalg.norm(vector), 10)  # a second search: what the first one paid once
again = time.perf_counter() - searched
store.close()
# VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across fork and exec
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"import": imported - started, "open": opened - imported, "search": searched - opened,
                  "second_search": again, "rss_mb": int(peak.split()[1]) / 1024}))
"""


def vectors_for(start: int, count: int) -> np.ndarray:
    """The same unit vectors for rows [start, start+count) on every call (exact search needs them again)."""
    rng = np.random.default_rng(start)
    block = rng.normal(size=(count, DIM)).astype(np.float32)
    return block / np.linalg.norm(block, axis=1, keepdims=True)


def path_of(i: int) -> str:
    folder = i % FOLDERS
    return f"/photos/{2000 + folder // 50}/{folder % 12 + 1:02d} event {folder:04d}/IMG_{i:08d}.jpg"


def fill(store: MilvusStore, rows: int) -> float:
    from milvus_store import ImageRecord

    store.drop()
    store.open_collection(MODEL, DIM)  # the model that the engine and server then load to encode text queries
    started = time.perf_counter()
    for start in range(0, rows, BATCH):
        count = min(BATCH, rows - start)
        block = vectors_for(start, count)
        store.upsert([ImageRecord(path_of(start + i), block[i], 100_000 + (start + i) % 5_000_000, 1.6e9 + start + i,
                                  f"{start + i:064x}") for i in range(count)])
    store.flush()
    return rows / (time.perf_counter() - started)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)) * 1000, float(np.percentile(samples, 95)) * 1000


@contextmanager
def milvus_server(data: Path) -> Iterator[str]:
    from conftest import _stop_server, _wait_ready
    from http_server import free_port

    binary = Path(sys.executable).parent / "milvus-server"
    port = free_port()
    log = open(data / "server.log", "wb")
    process = subprocess.Popen([str(binary), "--data", str(data), "--proxy-port", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_ready(uri, process, data / "server.log")
        yield uri
    finally:
        _stop_server(process)
        log.close()


def text_search_timings(engine_or_url: ImageSearchEngine | str, queries: int, folder: str | None) -> list[float]:
    """Seconds per text search (top 10), through the engine in process or a server's /api/search."""
    import httpx

    timings = []
    client = httpx.Client(timeout=60)  # one kept-alive connection, as the page's browser has
    for i in range(queries):
        query = f"{QUERIES[i % len(QUERIES)]} {i}"
        started = time.perf_counter()
        if isinstance(engine_or_url, str):
            params: dict[str, str | int] = {"q": query, "top_k": 10, **({"folder": folder} if folder else {})}
            response = client.get(engine_or_url + "/api/search", params=params)
            assert response.status_code == 200 and response.json()["results"], response.text
        else:
            from milvus_store import SearchFilter

            results = engine_or_url.search(query, 10, SearchFilter(path_prefix=folder) if folder else None)
            assert results
        timings.append(time.perf_counter() - started)
    client.close()
    return timings[1:]


HTTP_START_LIMIT = 900.0
SKIP_HTTP = False  # --skip-http


def report(phase: str, figures: dict[str, float]) -> None:
    """Each phase's figures as they come (stderr), so that a long run that fails late keeps them."""
    print(f"[{phase}] " + json.dumps({k: round(v, 4) for k, v in figures.items()}), file=sys.stderr, flush=True)


def http_figures(uri: str, model: str, queries: int, folder: str) -> dict[str, float]:
    import httpx
    from http_server import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "serve", "--milvus-uri", uri,
                               "--collection", COLLECTION, "--model", model, "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    figures: dict[str, float] = {}
    try:
        started = time.perf_counter()
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > HTTP_START_LIMIT:  # a figure in itself: the server is not usable
                figures["http_start_s"] = float("inf")
                report("http", figures)
                return figures
            time.sleep(0.5)
        figures["http_start_s"] = time.perf_counter() - started
        figures["http_p50_ms"], figures["http_p95_ms"] = percentiles(text_search_timings(url, queries, None))
        figures["http_filtered_p50_ms"], figures["http_filtered_p95_ms"] = percentiles(
            text_search_timings(url, max(10, queries // 4), folder))
        # a whole one-shot CLI search while the server runs: the CLI finds its advert and asks it (median of 3)
        walls = []
        for _ in range(3):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, str(ROOT / "image_search.py"), "--mode", "search", "--query", "a red car",
                                   "--milvus-uri", uri, "--collection", COLLECTION, "--paths-only"],
                                  capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - started)
            assert "using its API" in done.stderr and len(done.stdout.splitlines()) == 5, done.stderr
        figures["cli_via_server_s"] = statistics.median(walls)
        status = Path(f"/proc/{server.pid}/status").read_text()
        figures["http_rss_mb"] = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
        report("http", figures)
        return figures
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def measure(kind: str, uri: str, data_dir: Path, rows: int, queries: int) -> dict[str, float]:
    from image_search import ImageSearchEngine
    from milvus_store import MilvusStore, SearchFilter

    result: dict[str, float] = {"rows": rows}
    store = MilvusStore(uri, collection_name=COLLECTION)
    result["fill_rows_per_s"] = fill(store, rows)
    store.close()
    time.sleep(1)
    result["disk_mb"] = folder_bytes(data_dir) / 2**20

    # one-shot: fresh processes, the median of three
    shots = []
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", ONE_SHOT, uri, COLLECTION], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
        shot = json.loads(done.stdout.strip().splitlines()[-1])
        shot["wall"] = time.perf_counter() - started - shot["second_search"]
        shots.append(shot)
    for key in ("wall", "import", "open", "search", "second_search", "rss_mb"):
        result[f"oneshot_{key}"] = statistics.median(s[key] for s in shots)

    report("one-shot", result)

    store = MilvusStore(uri, collection_name=COLLECTION)
    # bookkeeping of an unchanged re-run: every row's size and mtime, compared with the files' (here: the same)
    started = time.perf_counter()
    known = {f.path: (f.size, f.mtime) for f in store.iter_files()}
    unchanged = sum(known.get(path_of(i)) == (100_000 + i % 5_000_000, 1.6e9 + i) for i in range(rows))
    result["bookkeeping_s"] = time.perf_counter() - started
    assert unchanged == rows, (unchanged, rows)
    store.close()
    report("bookkeeping", result)

    # warm, in a long-lived process (this one), as the HTTP server holds it
    store = MilvusStore(uri, collection_name=COLLECTION)
    started = time.perf_counter()
    store.enable_cache()  # Lite: the in-memory copy the server keeps; a server: nothing to do
    result["warm_open_s"] = time.perf_counter() - started
    result["warm_process_rss_mb"] = int(next(line for line in open("/proc/self/status")
                                              if line.startswith("VmRSS")).split()[1]) / 1024
    rng = np.random.default_rng(7)
    probes = rng.normal(size=(queries, DIM)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    store.search(probes[:1], 10)
    timings = []
    for probe in probes:
        started = time.perf_counter()
        store.search(probe[None], 10)
        timings.append(time.perf_counter() - started)
    result["warm_p50_ms"], result["warm_p95_ms"] = percentiles(timings)
    folder_filter = SearchFilter(path_prefix=str(Path(path_of(17)).parent) + "/")
    timings = []
    for probe in probes[: max(10, queries // 4)]:
        started = time.perf_counter()
        hits = store.search(probe[None], 10, folder_filter)[0]
        timings.append(time.perf_counter() - started)
        assert hits and all(h.fields["path"].startswith(folder_filter.path_prefix or "") for h in hits)
    result["filtered_p50_ms"], result["filtered_p95_ms"] = percentiles(timings)
    report("warm store", result)
    store.close()

    # the same through the engine with text queries, then a real HTTP server (Lite: one process at a time)
    with ImageSearchEngine(model_name=MODEL, milvus_uri=uri, collection_name=COLLECTION, device="cpu") as engine:
        engine.warm()
        result["engine_p50_ms"], result["engine_p95_ms"] = percentiles(text_search_timings(engine, queries, None))
        result["engine_filtered_p50_ms"], result["engine_filtered_p95_ms"] = percentiles(
            text_search_timings(engine, max(10, queries // 4), folder_filter.path_prefix))
    report("engine", result)
    if not SKIP_HTTP:
        result.update(http_figures(uri, MODEL, queries, folder_filter.path_prefix or ""))
    store = MilvusStore(uri, collection_name=COLLECTION)


    # recall against exact search over the same vectors
    exact_scores = np.concatenate([vectors_for(start, min(BATCH, rows - start)) @ probes[:20].T
                                   for start in range(0, rows, BATCH)])
    recall: dict[int, list[float]] = {10: [], 100: []}
    for q in range(20):
        order = np.argsort(-exact_scores[:, q])
        found = store.search(probes[q][None], 100)[0]
        from milvus_store import path_id

        got = [h.id for h in found]
        for k in (10, 100):
            truth = {path_id(path_of(int(i))) for i in order[:k]}
            recall[k].append(len(truth & set(got[:k])) / k)
    result["recall_at_10"], result["recall_at_100"] = float(np.mean(recall[10])), float(np.mean(recall[100]))
    store.drop()
    store.close()
    result["bench_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--stores", default="lite,server")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-http", action="store_true", help="leave out the HTTP server (Lite at 1M takes over 10 minutes to start it)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    global MODEL, SKIP_HTTP
    SKIP_HTTP = args.skip_http
    from indexing import random_vit_b_32

    MODEL = str(random_vit_b_32())
    rows_wanted = [int(s) for s in args.sizes.split(",")]
    table = []
    for kind in args.stores.split(","):
        for rows in rows_wanted:
            work = Path(tempfile.mkdtemp(prefix=f"scale-{kind}-"))
            try:
                if kind == "lite":
                    outcome = measure(kind, str(work / "scale.db"), work, rows, args.queries)
                else:
                    with milvus_server(work) as uri:
                        outcome = measure(kind, uri, work, rows, args.queries)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            outcome["store"] = kind  # type: ignore[assignment]
            print(json.dumps(outcome), flush=True)
            table.append(outcome)
    print()
    print("| store | rows | fill rows/s | disk MB | one-shot store part s (import/open/search) | one-shot RSS MB "
          "| store warm p50/p95 ms (folder) | warm process RSS MB | engine text p50/p95 ms (folder) "
          "| HTTP text p50/p95 ms (folder) | HTTP server start s / RSS MB | bookkeeping s | recall@10/@100 "
          "| one-shot CLI via server s |")
    print("|---|---:|---:|---:|---|---:|---|---:|---|---|---|---:|---|---:|")
    for r in table:
        def g(key: str, row: dict[str, float] = r) -> float:
            return row.get(key, float("nan"))

        print(f"| {r['store']} | {int(r['rows']):,} | {r['fill_rows_per_s']:,.0f} | {r['disk_mb']:,.0f} | "
              f"{r['oneshot_wall']:.2f} ({r['oneshot_import']:.2f}/{r['oneshot_open']:.2f}/{r['oneshot_search']:.3f}) | "
              f"{r['oneshot_rss_mb']:,.0f} | {r['warm_p50_ms']:.1f}/{r['warm_p95_ms']:.1f} ({r['filtered_p50_ms']:.1f}/{r['filtered_p95_ms']:.1f}) | "
              f"{g('warm_process_rss_mb'):,.0f} | "
              f"{r['engine_p50_ms']:.1f}/{r['engine_p95_ms']:.1f} ({r['engine_filtered_p50_ms']:.1f}/{r['engine_filtered_p95_ms']:.1f}) | "
              f"{g('http_p50_ms'):.1f}/{g('http_p95_ms'):.1f} ({g('http_filtered_p50_ms'):.1f}/{g('http_filtered_p95_ms'):.1f}) | "
              f"{g('http_start_s'):.1f} / {g('http_rss_mb'):,.0f} | {r['bookkeeping_s']:.2f} | "
              f"{r['recall_at_10']:.3f}/{r['recall_at_100']:.3f} | {g('cli_via_server_s'):.2f} |")


if __name__ == "__main__":
    main()
