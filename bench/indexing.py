"""Indexing throughput: the naive tutorial loop against our indexer, same model, same photos, one run.

    python bench/indexing.py            # 1,000 JPEGs of 12 megapixels
    python bench/indexing.py --quick    # 100 of them, under two minutes once the corpus is cached

Both sides use ViT-B-32 with the same random weights (compute is what counts) and Milvus Lite.
Each side runs in its own process so that peak RSS is its own. Ends with `ratio: X.XX`
(ours over naive, images/s end to end).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from corpus import corpus_files, make_corpus, random_open_clip_folder  # noqa: E402


def random_vit_b_32() -> Path:
    """ViT-B-32 with fixed random weights as an open_clip model folder (so both sides load it by path)."""
    return random_open_clip_folder("ViT-B-32", "vit-b-32-random")


def run_naive(files: list[Path], model_dir: Path, db: str) -> dict[str, object]:
    """What tutorials do: full-size PIL decode, reference preprocessing, one image per fp32 forward."""
    import numpy as np
    import open_clip
    import torch
    from PIL import Image
    from pymilvus import MilvusClient

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    model.eval()
    client = MilvusClient(db)
    client.create_collection("naive", dimension=512, metric_type="COSINE")
    stages = dict.fromkeys(["decode", "preprocess", "encode", "store"], 0.0)
    rows = []
    started = time.perf_counter()
    for i, path in enumerate(files):
        t0 = time.perf_counter()
        image = Image.open(path).convert("RGB")
        t1 = time.perf_counter()
        tensor = preprocess(image).unsqueeze(0)
        t2 = time.perf_counter()
        with torch.no_grad():
            vector = model.encode_image(tensor)
            vector = (vector / vector.norm(dim=-1, keepdim=True)).numpy()[0]
        t3 = time.perf_counter()
        rows.append({"id": i, "vector": vector.astype(np.float32).tolist(), "path": str(path)})
        stages["decode"] += t1 - t0
        stages["preprocess"] += t2 - t1
        stages["encode"] += t3 - t2
    t4 = time.perf_counter()
    client.insert("naive", rows)
    stages["store"] += time.perf_counter() - t4
    elapsed = time.perf_counter() - started
    return {"images": len(files), "seconds": elapsed, "stages": stages}


def run_ours(files: list[Path], model_dir: Path, db: str) -> dict[str, object]:
    from image_search import ImageSearchEngine

    folder = files[0].parent
    with ImageSearchEngine(model_name=str(model_dir), milvus_uri=db, collection_name="ours") as engine:
        # load the model outside the timed part, as naive does: one image through the image tower, since the
        # ONNX-led encoder builds its bf16 torch image tower only when the first images arrive
        from PIL import Image

        engine.encoder.encode_images([Image.new("RGB", (64, 64))])
        started = time.perf_counter()
        summary = engine.index_directory(folder)
        elapsed = time.perf_counter() - started
        assert summary.indexed == len(files), summary.to_dict()
        precision = getattr(engine.encoder.backend, "precision", "?")
    return {"images": summary.indexed, "seconds": elapsed, "stages": summary.stage_seconds, "precision": precision}


def child(which: str, count: int, folder: str, model_dir: str) -> None:
    files = corpus_files(Path(folder), count)
    with tempfile.TemporaryDirectory() as tmp:
        result = (run_naive if which == "naive" else run_ours)(files, Path(model_dir), str(Path(tmp) / "bench.db"))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 images instead of 1,000")
    parser.add_argument("--count", type=int)
    parser.add_argument("--only", choices=["naive", "ours"])
    parser.add_argument("--child", nargs=4, metavar=("WHICH", "COUNT", "FOLDER", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, count, folder, model_dir = args.child
        child(which, int(count), folder, model_dir)
        return
    count = args.count or (100 if args.quick else 1000)
    started = time.perf_counter()
    folder = make_corpus(count)
    model_dir = random_vit_b_32()
    size_mb = sum(f.stat().st_size for f in corpus_files(folder, count)) / 1e6
    print(f"corpus: {count} JPEGs of 4000x3000 ({size_mb:.0f} MB) ready in {time.perf_counter() - started:.0f}s")
    results = {}
    for which in ("naive", "ours"):
        if args.only and which != args.only:
            continue
        done = subprocess.run([sys.executable, __file__, "--child", which, str(count), str(folder), str(model_dir)],
                              capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{which} failed:\n{done.stderr[-3000:]}")
        result = json.loads(line[len("RESULT "):])
        results[which] = result
        rate = result["images"] / result["seconds"]
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in result["stages"].items())
        extra = f", precision {result['precision']}" if "precision" in result else ""
        print(f"{which:>5}: {rate:6.2f} images/s ({result['images']} in {result['seconds']:.1f}s; {stages}; "
              f"peak RSS {result['peak_rss_mb']:.0f} MB{extra})")
    if len(results) == 2:
        ratio = (results["ours"]["images"] / results["ours"]["seconds"]) / (results["naive"]["images"] / results["naive"]["seconds"])
        print("(ours: read/decode/preprocess are summed over decode threads and overlap the encode)")
        print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
