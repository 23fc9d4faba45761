"""Indexing on Ray against local mode on this machine: the same photos, model and Milvus server, one run.

    python bench/ray_index.py            # 400 JPEGs of 12 megapixels
    python bench/ray_index.py --quick    # 100 of them

Both sides index into a real Milvus 2.3.5 server (started here) with ViT-B-32 (fixed random weights:
compute is what counts), exported to ONNX once before timing. Local mode is one process with decode
threads; Ray mode is a local Ray on every core here: plan tasks, decode tasks, one encoder actor, a
Milvus Datasink. On one machine Ray can only add overhead (process hops, object store copies); the
figure says how much, and what a cluster must win back. Ends with `ratio: X.XX` (Ray over local,
images/s end to end; Ray's start is printed apart, since a cluster is already running).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from corpus import corpus_files, make_corpus  # noqa: E402
from indexing import random_vit_b_32  # noqa: E402
from scale import milvus_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 images instead of 400")
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    count = args.count or (100 if args.quick else 400)

    from image_search import ImageSearchEngine
    from photoseek.indexing.ray_index import RayOptions

    corpus = make_corpus(count)
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for path in corpus_files(corpus, count):
            os.symlink(path, photos / path.name)
        model = str(random_vit_b_32())
        print(f"corpus: {count} JPEGs of 4000x3000; model ViT-B-32 (random weights); cores here: {os.cpu_count()}")
        data = Path(tmp) / "milvus"
        data.mkdir()
        with milvus_server(data) as uri:
            engines = {name: ImageSearchEngine(model_name=model, milvus_uri=uri, collection_name=name) for name in ("local", "ray")}
            try:
                from PIL import Image

                engines["local"].encoder.encode_images([Image.new("RGB", (256, 256))])  # the ONNX export, before timing
                started = time.perf_counter()
                local = engines["local"].index_directory(photos)
                local_seconds = time.perf_counter() - started
                print(f"local: {local.indexed / local_seconds:6.2f} images/s ({local.indexed} in {local_seconds:.1f}s)")

                import ray

                started = time.perf_counter()
                ray.init(include_dashboard=False, log_to_driver=False)
                ray_start = time.perf_counter() - started
                started = time.perf_counter()
                on_ray = engines["ray"].index_on_ray([photos], ray=RayOptions())
                ray_seconds = time.perf_counter() - started
                ray.shutdown()
                print(f"  ray: {on_ray.indexed / ray_seconds:6.2f} images/s ({on_ray.indexed} in {ray_seconds:.1f}s, "
                      f"model loaded by the encoder actor included; Ray's own start {ray_start:.1f}s apart)")
                for name, engine in engines.items():
                    begun = time.perf_counter()
                    again = engine.index_directory(photos) if name == "local" else engine.index_on_ray([photos], ray=RayOptions())
                    print(f"unchanged re-run, {name}: {time.perf_counter() - begun:.1f}s ({again.unchanged} unchanged"
                          + (", Ray's start included)" if name == "ray" else ")"))
            finally:
                for engine in engines.values():
                    engine.close()
        print(f"ratio: {(on_ray.indexed / ray_seconds) / (local.indexed / local_seconds):.2f}")


if __name__ == "__main__":
    main()
