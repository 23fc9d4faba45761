"""Duplicates: are the groups real copies, and are the real copies found? Pair precision and recall.

    python bench/duplicates.py [--seed 20261207]        (also: python bench/relevance.py --only duplicates)

The corpus mixes four kinds of picture: flat synthetic scenes (tools/make_scenes.py, shapes on grey),
scikit-image's photographs, screenshot-like pictures (windows, boxes and text on light backgrounds) and
document-like pages (text rendered on white). Some originals get real copies: resized, recompressed as a
JPEG of low quality, cropped by up to 5 %, mirrored, shifted by a few per cent. Others get near-misses,
which are not copies: a scene's shape moved elsewhere, replaced by another shape of the same colour, or
recoloured; a page or a window with one line of text changed; another photograph of the same motorcycle.
A grouped pair is right when both photos are the same original or its copies. Reported at the defaults.
"""

from __future__ import annotations

import io
import itertools
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "bench"))

from make_scenes import COLOURS, SHAPES, SIZES, Scene, SceneObject, _polygon, random_scene, render  # noqa: E402

MODEL = "shapes-tiny::v1"
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "immunohistochemistry", "hubble_deep_field",
          "retina", "page", "text", "horse", "brick", "grass", "gravel", "colorwheel", "clock"]
WORDS = ("invoice total amount due payment account number date customer service order shipping address phone email "
         "report summary meeting agenda project budget schedule review approved pending quarterly annual figure table "
         "chapter section introduction method results discussion conclusion reference appendix note draft final").split()
COPY_KINDS = ("resized", "recompressed", "cropped", "mirrored", "shifted")


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def document(rng: random.Random, lines: list[str] | None = None) -> tuple[Image.Image, list[str]]:
    lines = lines or [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 9))) for _ in range(rng.randrange(12, 22))]
    page = Image.new("RGB", (620, 800), (250, 250, 248))
    draw = ImageDraw.Draw(page)
    draw.text((40, 30), lines[0].upper(), fill=(20, 20, 20), font=font(26))
    for n, line in enumerate(lines[1:]):
        draw.text((40, 90 + n * 32), line, fill=(40, 40, 40), font=font(18))
    return page, lines


def screenshot(rng: random.Random, labels: list[str] | None = None, layout: int | None = None) -> tuple[Image.Image, list[str], int]:
    layout = rng.randrange(2**31) if layout is None else layout
    shape = random.Random(layout)
    labels = labels or [" ".join(rng.choice(WORDS) for _ in range(3)) for _ in range(6)]
    image = Image.new("RGB", (800, 500), (236, 238, 242))
    draw = ImageDraw.Draw(image)
    accent = tuple(shape.randrange(40, 220) for _ in range(3))
    draw.rectangle((0, 0, 800, 36), fill=accent)
    draw.text((14, 8), labels[0], fill=(255, 255, 255), font=font(18))
    for n, label in enumerate(labels[1:]):
        x, y = 30 + (n % 2) * 380, 70 + (n // 2) * 140
        draw.rectangle((x, y, x + 350, y + 110), fill=(255, 255, 255), outline=(200, 200, 210))
        draw.rectangle((x + 12, y + 14, x + 52, y + 54), fill=tuple(shape.randrange(40, 220) for _ in range(3)))
        draw.text((x + 66, y + 22), label, fill=(30, 30, 30), font=font(17))
        draw.text((x + 66, y + 60), f"{shape.randrange(1, 999)} items", fill=(110, 110, 110), font=font(14))
    return image, labels, layout


def scene_with(background: Scene, objects: list[tuple[SceneObject, float, float]], size: int = 256) -> Image.Image:
    """A scene's background (its seed's grey and noise) with objects drawn where given (centre as a fraction)."""
    image = render(Scene((), background.seed), size)
    draw = ImageDraw.Draw(image)
    for obj, fx, fy in objects:
        radius = SIZES[obj.size][1] * size / 2
        cx, cy = fx * size, fy * size
        fill = COLOURS[obj.colour][1]
        if obj.shape == "circle":
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, radius, 0.1), fill=fill)
    return image


def copy_of(image: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    width, height = image.size
    if kind == "resized":
        factor = rng.choice([0.5, 0.7, 1.5])
        return image.resize((max(16, int(width * factor)), max(16, int(height * factor))), Image.Resampling.LANCZOS)
    if kind == "recompressed":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rng.choice([35, 50, 70]))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "cropped":  # up to 5 % of each side's length in all, split at random between its two edges
        cut_x, cut_y = int(width * rng.uniform(0.02, 0.05)), int(height * rng.uniform(0.02, 0.05))
        left, top = rng.randint(0, cut_x), rng.randint(0, cut_y)
        return image.crop((left, top, width - (cut_x - left), height - (cut_y - top)))
    if kind == "mirrored":
        return ImageOps.mirror(image)
    if kind == "shifted":  # the frame moved by 2-3 %: what a re-export with a nudged crop box does
        dx, dy = int(width * rng.uniform(0.02, 0.03)) * rng.choice([-1, 1]), int(height * rng.uniform(0.02, 0.03)) * rng.choice([-1, 1])
        edge = image.getpixel((0, 0))
        shifted = Image.new("RGB", image.size, edge)
        shifted.paste(image, (dx, dy))
        return shifted
    raise ValueError(kind)


def build(folder: Path, seed: int, scenes: int = 120) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Writes the corpus; returns each file's original (its own name for an original) and the near-miss pairs."""
    rng = random.Random(seed)
    origin: dict[str, str] = {}
    near: list[tuple[str, str]] = []

    def save(image: Image.Image, name: str, source: str) -> str:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(path, quality=92) if name.endswith(".jpg") else image.convert("RGB").save(path)
        origin[name] = source
        return name

    def with_copies(image: Image.Image, name: str, count: int) -> None:
        save(image, name, name)
        for kind in rng.sample(COPY_KINDS, count):
            save(copy_of(image, kind, rng), f"copies/{Path(name).stem}_{kind}.jpg", name)

    scene_rng = random.Random(seed + 1)
    for i in range(scenes):
        scene = random_scene(scene_rng)
        objects = [(obj, scene_rng.uniform(0.3, 0.7), scene_rng.uniform(0.3, 0.7)) if len(scene.objects) == 1 else
                   (obj, 0.28 + 0.44 * n, scene_rng.uniform(0.3, 0.7)) for n, obj in enumerate(scene.objects)]
        image = scene_with(scene, objects)
        name = f"scenes/scene_{i:04d}.png"
        if i % 6 == 0:
            with_copies(image, name, 2)
        else:
            save(image, name, name)
        if i % 6 == 3:  # three near-misses of this scene
            first, fx, fy = objects[0]
            others = objects[1:]
            moved = [(first, fx + 0.3 if fx < 0.5 else fx - 0.3, fy + 0.2 if fy < 0.5 else fy - 0.2), *others]  # elsewhere
            reshaped = [(SceneObject(next(s for s in SHAPES if s != first.shape),
                                     first.colour, first.size), fx, fy), *others]
            recoloured = [(SceneObject(first.shape, next(c for c in COLOURS if c != first.colour), first.size), fx, fy), *others]
            for label, variant in (("moved", moved), ("reshaped", reshaped), ("recoloured", recoloured)):
                near.append((name, save(scene_with(scene, variant), f"near/scene_{i:04d}_{label}.png", f"near/scene_{i:04d}_{label}.png")))
    import skimage.data

    for n, photo in enumerate(PHOTOS):
        array = getattr(skimage.data, photo)()
        image = Image.fromarray(array).convert("RGB")
        name = f"photos/{photo}.jpg"
        if n % 2 == 0:
            with_copies(image, name, 3)
        else:
            save(image, name, name)
    left, right, _ = skimage.data.stereo_motorcycle()  # two cameras a few centimetres apart: not a copy of each other
    save(Image.fromarray(left), "photos/motorcycle_left.jpg", "photos/motorcycle_left.jpg")
    near.append(("photos/motorcycle_left.jpg", save(Image.fromarray(right), "photos/motorcycle_right.jpg", "photos/motorcycle_right.jpg")))
    for i in range(16):
        page, lines = document(rng)
        name = f"documents/page_{i:02d}.png"
        with_copies(page, name, 2) if i % 2 == 0 else save(page, name, name)
        if i % 4 == 1:  # the same page with one line changed
            edited = list(lines)
            edited[5] = " ".join(rng.choice(WORDS) for _ in range(6))
            near.append((name, save(document(rng, edited)[0], f"near/page_{i:02d}_edited.png", f"near/page_{i:02d}_edited.png")))
    for i in range(16):
        image, labels, layout = screenshot(rng)
        name = f"screens/screen_{i:02d}.png"
        with_copies(image, name, 2) if i % 2 == 0 else save(image, name, name)
        if i % 4 == 1:  # the same window with one label changed
            edited = list(labels)
            edited[3] = " ".join(rng.choice(WORDS) for _ in range(3))
            near.append((name, save(screenshot(rng, edited, layout)[0], f"near/screen_{i:02d}_edited.png", f"near/screen_{i:02d}_edited.png")))
    return origin, near


def measure(folder: Path, database: str, origin: dict[str, str]) -> dict[str, float]:
    from image_search import ImageSearchEngine

    with ImageSearchEngine(model_name=MODEL, milvus_uri=database, collection_name="duplicates", device="cpu") as engine:
        engine.index_directory(folder)
        started = time.perf_counter()
        found = engine.find_duplicates()
        seconds = time.perf_counter() - started
    def relative(path: str) -> str:
        return str(Path(path).relative_to(folder))

    grouped = {frozenset(pair) for group in found.groups for pair in itertools.combinations([relative(r.path) for r in group], 2)}
    by_origin: dict[str, list[str]] = {}
    for name, source in origin.items():
        by_origin.setdefault(source, []).append(name)
    truth = {frozenset(pair) for names in by_origin.values() for pair in itertools.combinations(sorted(names), 2)}
    right = grouped & truth
    return {"photos": len(origin), "copy pairs": len(truth), "grouped pairs": len(grouped), "right": len(right),
            "precision": len(right) / len(grouped) if grouped else 1.0, "recall": len(right) / len(truth) if truth else 1.0,
            "seconds": seconds, "wrong": sorted(tuple(sorted(p)) for p in grouped - truth)[:12],  # type: ignore[dict-item]
            "missed": sorted(tuple(sorted(p)) for p in truth - grouped)[:12]}  # type: ignore[dict-item]


def duplicate_cases(work: Path, seed: int, rows: list) -> None:  # type: ignore[type-arg]
    from relevance import Row

    folder = work / "duplicates"
    origin, _ = build(folder, seed)
    result = measure(folder, str(work / "duplicates.db"), origin)
    rows.append(Row(f"duplicates: {result['photos']} pictures, {result['copy pairs']} copy pairs (precision / recall of pairs)",
                    {"words auto": f"{result['precision']:.3f} / {result['recall']:.3f} ({result['grouped pairs']} grouped, "
                                   f"{result['seconds']:.1f} s)"}))
    print(rows[-1].case, rows[-1].values, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="duplicates-") as scratch:
        folder = Path(scratch) / "corpus"
        origin, near = build(folder, args.seed)
        result = measure(folder, str(Path(scratch) / "duplicates.db"), origin)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
