"""Which runtime and precision should run the image tower on a CPU? Speed and fidelity side by side.

    python bench/onnx_precision.py            # 64 real photos, ViT-B-32-256 random weights

For each of ONNX Runtime fp32 / int8 and torch fp32 / bf16: images/s of the image tower alone (batches
of 32, photos already decoded and preprocessed), cosine of its vectors to ONNX fp32 on real photos
(min and mean), and the trained test model's held-out recall (shapes-tiny::v1, 500 scenes, English and
Chinese captions) through that runtime and precision. A faster default is adopted only when the cosine
stays >= 0.99 and the recall does not drop (issue #11).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tools"))

from corpus import corpus_files, make_corpus  # noqa: E402
from vs_rclip import random_model  # noqa: E402

from clip_encoder import CLIPEncoder  # noqa: E402
from photoseek.indexing.decode import load_rgb  # noqa: E402

CONFIGS = [("onnx", "fp32"), ("onnx", "int8"), ("torch", "fp32"), ("torch", "bf16")]


def recall(encoder: CLIPEncoder, folder: Path, captions: dict[str, dict[str, str]], language: str, k: int) -> float:
    names = sorted(captions)
    images = encoder.encode_images([load_rgb(folder / n, min_side=encoder.image_size) for n in names])
    texts = encoder.encode_texts([captions[n][language] for n in names])
    ranks = np.argsort(-(texts @ images.T), axis=1)[:, :k]
    return float(np.mean([i in row for i, row in enumerate(ranks)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from make_scenes import write_scenes

    model = str(random_model())
    files = corpus_files(make_corpus(max(args.photos, 100)), args.photos)
    decoded = [load_rgb(f, min_side=256) for f in files]
    scenes = Path(tempfile.mkdtemp(prefix="held-out-"))
    captions = write_scenes(scenes, count=500, seed=20261129)

    reference: np.ndarray | None = None
    rows = []
    for runtime, precision in CONFIGS:
        encoder = CLIPEncoder(model_name=model, device="cpu", runtime=runtime, precision=precision, batch_size=32)
        prepared = [encoder.prepare_image(image) for image in decoded]
        encoder.encode_prepared(prepared[:32])  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            vectors = encoder.encode_prepared(prepared)
            best = min(best, time.perf_counter() - start)
        if reference is None:
            reference = vectors
        cosines = (vectors * reference).sum(axis=1)
        tiny = CLIPEncoder(model_name="shapes-tiny::v1", device="cpu", runtime=runtime, precision=precision)
        recalls = {f"{lang} R@{k}": recall(tiny, scenes, captions, lang, k) for lang in ("en", "zh") for k in (1, 5)}
        rows.append((runtime, precision, len(prepared) / best, float(cosines.min()), float(cosines.mean()), recalls))
        encoder.close()
        tiny.close()
    print(f"\nimage tower alone, {args.photos} real photos, ViT-B-32-256 random weights, batches of 32, best of {args.repeats}")
    keys = list(rows[0][5])
    print("| runtime | precision | img/s | cosine to ONNX fp32 (min / mean) | " + " | ".join(f"shapes-tiny {k}" for k in keys) + " |")
    print("|---|---|---|---|" + "---|" * len(keys))
    for runtime, precision, speed, low, mean, recalls in rows:
        print(f"| {runtime} | {precision} | {speed:.1f} | {low:.5f} / {mean:.5f} | " + " | ".join(f"{recalls[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
