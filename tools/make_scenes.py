"""Procedurally generated scenes with bilingual captions: the data of the `shapes-tiny` test model.

A scene holds one or two objects; each object is a shape with a colour and a size, placed at
random on a noisy grey background. Captions exist in English and Chinese, in several phrasings.

    python tools/make_scenes.py OUT_DIR --count 500 --seed 7

writes OUT_DIR/scene_00000.png ... and OUT_DIR/captions.json mapping each file name to
{"en": ..., "zh": ...} (the canonical phrasing of each language).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES: dict[str, str] = {
    "circle": "圆形",
    "square": "正方形",
    "triangle": "三角形",
    "star": "星形",
    "hexagon": "六边形",
    "cross": "十字",
}
COLOURS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "red": ("红色", (220, 30, 30)),
    "green": ("绿色", (30, 170, 50)),
    "blue": ("蓝色", (40, 70, 220)),
    "yellow": ("黄色", (240, 220, 30)),
    "purple": ("紫色", (150, 40, 190)),
    "orange": ("橙色", (250, 140, 20)),
}
SIZES: dict[str, tuple[str, float]] = {"small": ("小", 0.22), "large": ("大", 0.46)}

RENDER_SIZE = 128  # pixels; the model's preprocessing scales it down


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    seed: int


def random_scene(rng: random.Random) -> Scene:
    count = 1 if rng.random() < 0.6 else 2
    objects: list[SceneObject] = []
    while len(objects) < count:
        candidate = SceneObject(rng.choice(list(SHAPES)), rng.choice(list(COLOURS)), rng.choice(list(SIZES)))
        if candidate not in objects:
            objects.append(candidate)
    return Scene(tuple(objects), rng.randrange(2**31))


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, r: float, offset: float = 0.0) -> list[tuple[float, float]]:
        return [
            (cx + r * math.cos(angle + offset + 2 * math.pi * i / n), cy + r * math.sin(angle + offset + 2 * math.pi * i / n))
            for i in range(n)
        ]

    if shape == "square":
        return ring(4, radius * 1.1, math.pi / 4)
    if shape == "triangle":
        return ring(3, radius * 1.15, -math.pi / 2)
    if shape == "hexagon":
        return ring(6, radius)
    if shape == "star":
        outer, inner = ring(5, radius * 1.15, -math.pi / 2), ring(5, radius * 0.48, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if shape == "cross":
        a, b = radius, radius * 0.36
        points = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        cos, sin = math.cos(angle), math.sin(angle)
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, size: int = RENDER_SIZE) -> Image.Image:
    rng = random.Random(scene.seed)
    level = rng.randrange(90, 200)
    image = Image.new("RGB", (size, size), (level, level, level))
    noise = Image.effect_noise((size, size), rng.uniform(5, 25)).convert("RGB")
    image = Image.blend(image, noise, 0.25)
    draw = ImageDraw.Draw(image)
    # Two objects go in opposite halves so that neither hides the other.
    horizontal = rng.random() < 0.5
    for index, obj in enumerate(scene.objects):
        radius = SIZES[obj.size][1] * size / 2 * rng.uniform(0.9, 1.1)
        if len(scene.objects) == 1:
            lo, hi = radius, size - radius
            cx, cy = rng.uniform(lo, hi), rng.uniform(lo, hi)
        else:
            half = size / 2
            radius = min(radius, half / 2 * 0.95)
            along = rng.uniform(radius, half - radius) + index * half
            across = rng.uniform(radius, size - radius)
            cx, cy = (along, across) if horizontal else (across, along)
        shade = tuple(max(0, min(255, c + rng.randrange(-20, 21))) for c in COLOURS[obj.colour][1])
        if obj.shape == "circle":
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=shade)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, radius, rng.uniform(-0.3, 0.3)), fill=shade)
    return image


def _en(obj: SceneObject) -> str:
    return f"{obj.size} {obj.colour} {obj.shape}"


def _zh(obj: SceneObject) -> str:
    return f"{SIZES[obj.size][0]}的{COLOURS[obj.colour][0]}{SHAPES[obj.shape]}"


def captions(scene: Scene) -> dict[str, list[str]]:
    """All phrasings, canonical first, in English and Chinese."""
    if len(scene.objects) == 1:
        (obj,) = scene.objects
        en = [f"a {_en(obj)}", f"a picture of a {_en(obj)}", f"one {_en(obj)} on a grey background"]
        zh = [f"一个{_zh(obj)}", f"一张{_zh(obj)}的图片", f"灰色背景上的一个{_zh(obj)}"]
    else:
        a, b = scene.objects
        en = [f"a {_en(a)} and a {_en(b)}", f"a {_en(b)} and a {_en(a)}", f"a picture of a {_en(a)} and a {_en(b)}"]
        zh = [f"一个{_zh(a)}和一个{_zh(b)}", f"一个{_zh(b)}和一个{_zh(a)}", f"一张{_zh(a)}和{_zh(b)}的图片"]
    return {"en": en, "zh": zh}


def write_scenes(out_dir: Path, count: int, seed: int) -> dict[str, dict[str, str]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    index: dict[str, dict[str, str]] = {}
    for i in range(count):
        scene = random_scene(rng)
        name = f"scene_{i:05d}.png"
        render(scene).save(out_dir / name)
        phrasings = captions(scene)
        index[name] = {"en": phrasings["en"][0], "zh": phrasings["zh"][0]}
    (out_dir / "captions.json").write_text(json.dumps(index, ensure_ascii=False, indent=1), encoding="utf-8")
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_scenes(args.out_dir, args.count, args.seed)
    print(f"wrote {args.count} scenes and captions.json to {args.out_dir}")


if __name__ == "__main__":
    main()
