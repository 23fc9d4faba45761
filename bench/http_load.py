"""Load test of GET /api/search on loopback: 8 concurrent clients over 10,000 indexed images.

    python bench/http_load.py [--images 10000] [--clients 8] [--requests 100]

Indexes generated scenes with the test model into a cached Milvus Lite database, starts the real
server (`image_search.py --mode serve`) in its own process, and sends a bounded number of requests
(each client `--requests`, stopping early after `--max-seconds`). Prints p50/p95/p99 latency.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "bench"))
from servers import wait_until_ready  # noqa: E402

OUT = ROOT / "bench" / "out"
QUERIES = ["a large red circle", "一个小的蓝色星形", "a small green square and a large yellow star", "紫色的六边形",
           "an orange cross", "一个大的红色三角形和一个小的绿色圆形", "a picture of a blue hexagon", "黄色的星形"]


def build_index(count: int) -> Path:
    from make_scenes import write_scenes

    from image_search import ImageSearchEngine

    folder, db = OUT / f"scenes_{count}", OUT / f"http_{count}.db"
    if not (folder / "captions.json").exists():
        write_scenes(folder, count=count, seed=5)
    with ImageSearchEngine(model_name="shapes-tiny::v1", milvus_uri=str(db)) as engine:
        if engine.get_stats()["total_images"] < count:
            started = time.perf_counter()
            summary = engine.index_directory(folder)
            print(f"indexed {summary.indexed} images in {time.perf_counter() - started:.0f}s")
    return db


def healthz_while_decoding(base: str, uploads: int = 4) -> np.ndarray:
    """/healthz latencies (ms) while `uploads` clients each search by an 80-megapixel PNG."""
    import io

    import httpx
    from PIL import Image

    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((10000, 8000)).convert("RGB").save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()

    def upload() -> None:
        with httpx.Client(base_url=base, timeout=300) as http:
            http.post("/api/search/image", files={"file": ("big.png", data, "image/png")}).raise_for_status()

    threads = [threading.Thread(target=upload) for _ in range(uploads)]
    for thread in threads:
        thread.start()
    latencies = []
    with httpx.Client(base_url=base, timeout=60) as http:
        while any(thread.is_alive() for thread in threads):
            started = time.perf_counter()
            http.get("/healthz").raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
    for thread in threads:
        thread.join()
    return np.asarray(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100, help="per client")
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    import httpx

    db = build_index(args.images)
    server = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "serve", "--milvus-uri", str(db),
                               "--host", "127.0.0.1", "--port", str(args.port)], env={**os.environ},
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_until_ready(lambda: httpx.get(base + "/healthz", timeout=1).raise_for_status(), server, "server", 60,
                         (httpx.HTTPError,))
        httpx.get(base + "/api/search", params={"q": "warm up", "top_k": 10}, timeout=30)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.time() + args.max_seconds

        def client(index: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                for i in range(args.requests):
                    if time.time() > stop_at:
                        return
                    query = f"{QUERIES[(index + i) % len(QUERIES)]}"
                    started = time.perf_counter()
                    response = http.get("/api/search", params={"q": query, "top_k": 10})
                    elapsed = (time.perf_counter() - started) * 1000
                    with lock:
                        (latencies if response.status_code == 200 else errors).append(elapsed if response.status_code == 200 else str(response.status_code))  # type: ignore[arg-type]

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        values = np.asarray(latencies)
        print(f"{len(values)} requests ({len(errors)} errors) from {args.clients} clients over {args.images} images "
              f"in {wall:.1f}s: {len(values) / wall:.1f} req/s")
        print(f"GET /api/search latency: p50 {np.percentile(values, 50):.1f} ms, p95 {np.percentile(values, 95):.1f} ms, "
              f"p99 {np.percentile(values, 99):.1f} ms")
        health = healthz_while_decoding(base)
        print(f"GET /healthz while four 80 MP PNG uploads decode: p50 {np.percentile(health, 50):.1f} ms, "
              f"p99 {np.percentile(health, 99):.1f} ms, max {health.max():.1f} ms ({len(health)} requests)")
    finally:
        server.send_signal(2)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
