"""Text-query latency: encode one query + top-10 search over a Milvus Lite collection of 100,000 vectors.

    python bench/query.py [--vectors 100000] [--queries 200]

The collection holds random unit vectors (latency does not depend on what they mean); the query
goes through ImageSearchEngine.search with ViT-B-32 (random weights), warm model. Prints p50/p95
of the whole call and of its two parts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from corpus import OUT  # noqa: E402
from indexing import random_vit_b_32  # noqa: E402

WORDS = ["cat", "dog", "beach", "mountain", "red car", "city at night", "birthday cake", "snow", "forest", "portrait",
         "一只可爱的猫咪", "风景", "sunset over the sea", "a bowl of soup", "rocket launch", "coffee cup"]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    from image_search import ImageSearchEngine
    from milvus_store import ImageRecord

    model_dir = random_vit_b_32()
    db = OUT / f"query_{args.vectors}.db"
    engine = ImageSearchEngine(model_name=str(model_dir), milvus_uri=str(db), collection_name="query_bench")
    store = engine.store
    if store.count() < args.vectors:
        store.drop()
        store.open_collection(str(model_dir), 512)
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        for start in range(0, args.vectors, 5000):
            vectors = rng.normal(size=(min(5000, args.vectors - start), 512)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.upsert([ImageRecord(f"/bench/photo_{start + i:07d}.jpg", v, 1000, 0.0, "") for i, v in enumerate(vectors)])
        store.flush()
        print(f"filled {args.vectors} vectors in {time.perf_counter() - started:.0f}s")
    print(f"collection: {store.count()} vectors, Milvus Lite at {db}")

    started = time.perf_counter()
    engine.warm()
    print(f"warm (model + in-memory vectors) in {time.perf_counter() - started:.1f}s")
    engine.search("warm up", top_k=10)
    total, encode, search = [], [], []
    for i in range(args.queries):
        query = f"{WORDS[i % len(WORDS)]} {i}"
        t0 = time.perf_counter()
        vector = engine.encoder.encode_texts([query])
        t1 = time.perf_counter()
        store.search(vector, 10)
        t2 = time.perf_counter()
        engine.search(query, top_k=10)
        t3 = time.perf_counter()
        encode.append((t1 - t0) * 1000)
        search.append((t2 - t1) * 1000)
        total.append((t3 - t2) * 1000)
    for name, values in (("engine.search", total), ("  text encode", encode), ("  milvus search", search)):
        print(f"{name:>15}: p50 {statistics.median(values):6.1f} ms  p95 {percentile(values, 95):6.1f} ms")
    engine.close()


if __name__ == "__main__":
    main()
