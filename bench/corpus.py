"""A corpus of real-size photos for benchmarks: scikit-image's bundled photographs, upscaled to
12 megapixels with random crops, flips, colour shifts and sensor-like noise (no two identical).
Cached under bench/out/ so repeated runs do not pay for generation."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SOURCES = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cat",
           "colorwheel", "camera", "coins", "moon"]
OUT = Path(__file__).resolve().parent / "out"


def _source(name: str) -> Image.Image:
    import skimage.data

    array = getattr(skimage.data, name)()
    return Image.fromarray(array).convert("RGB")


def _make(args: tuple[Path, int, int, tuple[int, int]]) -> None:
    folder, index, seed, size = args
    path = folder / f"photo_{index:05d}.jpg"
    if path.exists():
        return
    rng = np.random.default_rng(seed * 100_003 + index)
    image = _source(SOURCES[index % len(SOURCES)])
    w, h = image.size
    crop = rng.uniform(0.6, 1.0)
    cw, ch = int(w * crop), int(h * crop)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if rng.random() < 0.3:
        image = ImageOps.flip(image)
    image = image.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20, size=3)
    pixels += rng.normal(0, 6, size=pixels.shape[:2] + (1,)).astype(np.float32)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path.with_suffix(".tmp"), format="JPEG", quality=90)
    os.replace(path.with_suffix(".tmp"), path)


def make_corpus(count: int, seed: int = 0, size: tuple[int, int] = (4000, 3000)) -> Path:
    folder = OUT / f"corpus_{count}_{size[0]}x{size[1]}_s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, i, seed, size) for i in range(count)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_make, jobs, chunksize=4))
    return folder


def corpus_files(folder: Path, count: int) -> list[Path]:
    return [folder / f"photo_{i:05d}.jpg" for i in range(count)]


def random_open_clip_folder(arch: str, name: str, pretrained_tag: str | None = None) -> Path:
    """`arch` with fixed random weights (seed 0) as an open_clip model folder under bench/out/`name`, its
    preprocessing taken from `pretrained_tag` when given (else OpenAI's at the architecture's size)."""
    folder = OUT / name
    if (folder / "open_clip_model.safetensors").exists():
        return folder
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    tag = (open_clip.get_pretrained_cfg(arch, pretrained_tag) if pretrained_tag else None) or {}
    size = model.visual.image_size
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": open_clip.get_model_config(arch),
              "preprocess_cfg": {"size": size[0] if isinstance(size, (tuple, list)) else size,
                                 "mean": list(tag.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                                 "std": list(tag.get("std", open_clip.OPENAI_DATASET_STD)),
                                 "interpolation": tag.get("interpolation", "bicubic"),
                                 "resize_mode": tag.get("resize_mode", "shortest")}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder
