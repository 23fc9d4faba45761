"""open_clip's evaluation transform in Pillow and numpy, without torch or torchvision.

Each step is the one torchvision runs on a PIL image (so the pixels are the same, not merely close):
Resize calls PIL's `resize` with the computed size, CenterCrop pads with the fill colour when the image
is smaller and crops at `round((size - crop) / 2)`, ToTensor divides by 255, Normalize subtracts the mean
and divides by the std. The three resize modes open_clip knows ('shortest', 'longest', 'squash') are all
here; `tests/test_onnx_runtime.py` compares them with open_clip's own transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "random": Image.Resampling.BICUBIC}  # open_clip evaluates 'random' as bicubic


@dataclass(frozen=True)
class ImageTransform:
    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0
    _scale: np.ndarray = field(init=False, repr=False, compare=False)
    _shift: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.resize_mode not in ("shortest", "longest", "squash"):
            raise ValueError(f"unknown resize mode {self.resize_mode!r}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).astype(np.float32))
        object.__setattr__(self, "_shift", (mean / std).astype(np.float32))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ImageTransform:
        size = record["size"]
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return cls((height, width), tuple(record["mean"]), tuple(record["std"]),  # type: ignore[arg-type]
                   record.get("interpolation") or "bicubic", record.get("resize_mode") or "shortest",
                   int(record.get("fill_color", 0) or 0))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> float32 [3, H, W], normalised."""
        resample = _RESAMPLE[self.interpolation]
        height, width = self.size
        if self.resize_mode == "squash":
            image = image.resize((width, height), resample)
        elif self.resize_mode == "longest":
            image = image.resize(_keep_ratio(image, self.size, longest=True), resample)
            image = _center_crop_or_pad(image, self.size, self.fill_color)
        else:
            if height == width:
                image = image.resize(_shortest_edge(image, height), resample)
            else:
                # open_clip builds this ResizeKeepRatio without its interpolation: always bicubic
                image = image.resize(_keep_ratio(image, self.size, longest=False), Image.Resampling.BICUBIC)
            image = _center_crop_or_pad(image, self.size, 0)
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
        return pixels * self._scale - self._shift

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self(image) for image in images])


def _shortest_edge(image: Image.Image, size: int) -> tuple[int, int]:
    """torchvision's Resize(int): the shorter side becomes `size`, the longer keeps the ratio (truncated)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return width, height
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _keep_ratio(image: Image.Image, target: tuple[int, int], longest: bool) -> tuple[int, int]:
    """open_clip's ResizeKeepRatio (from timm) without its random parts: returns (width, height)."""
    width, height = image.size
    ratio_h, ratio_w = height / target[0], width / target[1]
    ratio = max(ratio_h, ratio_w) if longest else min(ratio_h, ratio_w)
    return round(width / ratio), round(height / ratio)


def _center_crop_or_pad(image: Image.Image, size: tuple[int, int], fill: int) -> Image.Image:
    crop_height, crop_width = size
    width, height = image.size
    if crop_width > width or crop_height > height:
        left = (crop_width - width) // 2 if crop_width > width else 0
        top = (crop_height - height) // 2 if crop_height > height else 0
        right = (crop_width - width + 1) // 2 if crop_width > width else 0
        bottom = (crop_height - height + 1) // 2 if crop_height > height else 0
        # as torchvision's pad (open_clip's) does it: Pillow's expand keeps a palette image's own palette
        image = ImageOps.expand(image, (left, top, right, bottom), (fill,) * len(image.getbands()))
        width, height = image.size
        if crop_width == width and crop_height == height:
            return image
    top = int(round((height - crop_height) / 2.0))
    left = int(round((width - crop_width) / 2.0))
    return image.crop((left, top, left + crop_width, top + crop_height))
