"""The older Milvus Lite line (2.4/2.5: a C++ engine in its own process) at scale, for the embedded-default
decision (README, How it scales). Not our dependency: installed beside ours for this probe only.

    pip install --target /tmp/lite25 'milvus-lite==2.5.1' 'setuptools<70'   # it still imports pkg_resources
    PYTHONPATH=/tmp/lite25 python bench/lite_c_engine.py --rows 1000000 --write upsert
    PYTHONPATH=/tmp/lite25 python bench/lite_c_engine.py --rows 400000 --write insert

Prints: the fill rate as rows grow (upsert, or insert as a writer that deletes changed rows first
would), whether collection properties survive (ours record the model in one), reading every row's
bookkeeping fields (an unchanged re-run), warm FLAT search p50, and a fresh process's import / open /
first search (a one-shot CLI search), median of three.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_SHOT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from pymilvus import MilvusClient
t1 = time.perf_counter()
client = MilvusClient(sys.argv[1]); client.load_collection("probe")
t2 = time.perf_counter()
vector = np.random.default_rng(1).normal(size=(1, 512)).astype(np.float32)
hits = client.search("probe", data=vector.tolist(), limit=10, output_fields=["path"])
t3 = time.perf_counter()
assert len(hits[0]) == 10
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "search": t3 - t2}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--write", choices=["upsert", "insert"], default="upsert")
    args = parser.parse_args()
    import milvus_lite
    import numpy as np
    from pymilvus import DataType, MilvusClient

    print(f"milvus-lite {getattr(milvus_lite, '__version__', '?')} from {Path(milvus_lite.__file__).parent}")
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "probe.db")
        client = MilvusClient(db)
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("path", DataType.VARCHAR, max_length=4096)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime", DataType.DOUBLE)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=512)
        index = client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="COSINE")
        client.create_collection("probe", schema=schema, index_params=index, properties={"image_search.meta": "{}"})
        rng = np.random.default_rng(0)
        write = client.upsert if args.write == "upsert" else client.insert
        started, marks = time.perf_counter(), []
        for start in range(0, args.rows, 2000):
            vectors = rng.normal(size=(2000, 512)).astype(np.float32)
            write("probe", [{"id": i, "path": f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg", "size": 3_000_000 + i,
                             "mtime": 1.5e9 + i, "vector": v.tolist()} for i, v in zip(range(start, start + 2000), vectors, strict=True)])
            if (start + 2000) % max(2000, args.rows // 5) == 0:
                marks.append(f"{start + 2000:,} rows at {time.perf_counter() - started:.1f}s")
        print(f"fill ({args.write}): " + ", ".join(marks))
        client.flush("probe")
        print("collection properties kept:", bool(client.describe_collection("probe").get("properties")))
        started = time.perf_counter()
        iterator = client.query_iterator("probe", batch_size=4000, filter="", output_fields=["id", "path", "size", "mtime"])
        count = 0
        while page := iterator.next():
            count += len(page)
        iterator.close()
        print(f"bookkeeping: {count:,} rows read in {time.perf_counter() - started:.2f}s")
        probe = rng.normal(size=(1, 512)).astype(np.float32).tolist()
        timings = []
        for _ in range(20):
            begun = time.perf_counter()
            client.search("probe", data=probe, limit=10, output_fields=["path"])
            timings.append(time.perf_counter() - begun)
        print(f"warm search p50: {statistics.median(timings) * 1000:.1f} ms")
        client.close()
        shots = [json.loads(subprocess.run([sys.executable, "-c", ONE_SHOT, db], capture_output=True, text=True,
                                           check=True).stdout.strip().splitlines()[-1]) for _ in range(3)]
        print("one-shot: " + " / ".join(f"{key} {statistics.median(s[key] for s in shots):.2f}s"
                                        for key in ("import", "open", "search")))


if __name__ == "__main__":
    main()
