"""Whether two pictures are copies of one another, checked pixel by pixel: the last word on a duplicate.

A CLIP vector and a perceptual hash say two pictures look alike; a screenshot and the next one, two pages
of one report, a shape moved or recoloured look alike too, and deleting one of them loses something. So a
candidate pair is registered and compared:

1. Both are brought to one working size (the smaller picture's, at most WORKING_SIDE px along the long side,
   so that a downsized copy is compared at the detail it still has).
2. The second is aligned onto the first: mirrored or not, scaled by up to MAX_SCALE along each axis (a crop
   of up to 5 %), shifted (phase correlation, to a tenth of a pixel). Found on small greys first, then refined.
3. Differences are read with a one-pixel tolerance (a pixel matches if any neighbour matches: resampling moves
   edges by a fraction of a pixel, an edit does not), in luminance at the working size and in colour at half of
   it (JPEG keeps colour at half resolution), away from the borders a crop or shift changes.

They are copies when under MAX_CHANGED of the compared pixels differ by more than CHANGED_LEVEL. The thresholds
were set on bench/duplicates.py's corpus (copies resized, recompressed, cropped, mirrored and shifted; near
misses with one word of a page changed, a shape moved, swapped or recoloured). Written with numpy and Pillow
rather than OpenCV, whose wheel would add ~60 MB for this one check.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

WORKING_SIDE = 512
COARSE_SIDE = 64
REFINE_SIDE = 128
COARSE_KEPT = 2  # coarse alignments refined
MAX_SCALE = 0.06  # per axis: a 5 % crop magnifies by 1/0.95
MAX_SHIFT = 0.10  # of the side: a crop's offset plus a shifted frame
BORDER = 0.08  # of each side, left out of the comparison (a crop or a shift changes it)
CHANGED_LEVEL = 48.0  # of 255, luminance
CHANGED_COLOUR = 28.0  # of 255, Cb or Cr (a green shape on grey differs from it by 36 and 60)
BLUR = 1.0  # px, Gaussian
MAX_CHANGED = 0.0001  # share of compared pixels
MAX_MEAN_DIFFERENCE = 3.0
MAX_COARSE_RESIDUAL = 14.0  # mean grey difference at COARSE_SIDE after the best coarse alignment (copies: under 7)  # of 255, on average over the compared pixels
_COARSE_SCALES = np.linspace(1 - MAX_SCALE, 1 + MAX_SCALE, 5)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Comparison:
    same: bool
    changed: float  # share of compared pixels that differ
    mirrored: bool = False
    mean_difference: float = 255.0  # over the compared pixels, in luminance or colour (0-255)


def compare(first: Image.Image, second: Image.Image, mirrored: bool | None = None) -> Comparison:
    """Whether `second` is a copy of `first` (resized, recompressed, cropped by up to 5 %, mirrored, shifted).
    `mirrored`: whether to look for a mirrored copy only, or a copy the same way round only (None: both)."""
    a, b = first.convert("RGB"), second.convert("RGB")
    if abs(np.log((a.width / a.height) / (b.width / b.height))) > 2 * MAX_SCALE:
        return Comparison(False, 1.0)
    side = min(WORKING_SIDE, max(a.size), max(b.size))
    ratio = side / max(a.size)
    size = (max(16, round(a.width * ratio)), max(16, round(a.height * ratio)))
    a, b = a.resize(size, Image.Resampling.LANCZOS), b.resize(size, Image.Resampling.LANCZOS)
    registered = _register(a, b, (False, True) if mirrored is None else (mirrored,))
    if registered is None:
        return Comparison(False, 1.0)
    mirrored, sx, sy, tx, ty = registered
    if mirrored:
        b = ImageOps.mirror(b)
    width, height = size
    if abs(tx) > MAX_SHIFT * width or abs(ty) > MAX_SHIFT * height:
        return Comparison(False, 1.0, mirrored)
    moved = np.asarray(_warp(b, sx, sy, tx, ty, size), dtype=np.float32)
    covered = np.asarray(_warp(Image.new("L", size, 255), sx, sy, tx, ty, size)) > 250
    inner = np.zeros_like(covered)
    dy, dx = int(BORDER * height) + 1, int(BORDER * width) + 1
    inner[dy : height - dy, dx : width - dx] = True
    mask = covered & inner
    if mask.mean() < 0.5:
        return Comparison(False, 1.0, mirrored)
    # resampling rings and splits thin strokes by fractions of a pixel, differently at each scale: soften both alike
    original = np.asarray(a.filter(ImageFilter.GaussianBlur(BLUR)).convert("YCbCr"), dtype=np.float32)
    moved = np.asarray(Image.fromarray(moved.astype(np.uint8)).filter(ImageFilter.GaussianBlur(BLUR)).convert("YCbCr"),
                       dtype=np.float32)
    luma = _tolerant(original[..., 0], moved[..., 0])
    luma_changed = luma > CHANGED_LEVEL
    # a copy keeps its brightness too: a lighter grey is another picture (or an edit)
    luma_shift = float(np.abs(original[..., 0] - moved[..., 0])[mask].mean())
    if float(luma_changed[mask].mean()) > MAX_CHANGED or luma_shift > MAX_MEAN_DIFFERENCE:
        return Comparison(False, float(luma_changed[mask].mean()), mirrored, luma_shift)
    colour = _tolerant_colour(original[..., 1:], moved[..., 1:])
    changed = float((luma_changed | (colour > CHANGED_COLOUR))[mask].mean())
    shifted = max(luma_shift, float(colour[mask].mean()))
    return Comparison(changed <= MAX_CHANGED and shifted <= MAX_MEAN_DIFFERENCE, changed, mirrored, shifted)


def _register(a: Image.Image, b: Image.Image, ways: tuple[bool, ...]) -> tuple[bool, float, float, float, float] | None:
    """(mirrored, scale x, scale y, shift x, shift y) that best lay `b` over `a` (both at the working size): a
    coarse grid on small greys, ranked by what is left after each one's best shift (pages of text repeat line
    after line, so the highest correlation peak can be a line off), the best few refined at REFINE_SIDE."""
    coarse_target, coarse_size = _grey_at(a, COARSE_SIDE)
    coarse: list[tuple[float, bool, float, float, float, float]] = []
    grey_b = b.convert("L")  # registration works on luminance: a third of the pixels to move
    for mirrored in ways:
        moving = (ImageOps.mirror(grey_b) if mirrored else grey_b).resize(coarse_size, Image.Resampling.BILINEAR)
        for sx in _COARSE_SCALES:
            for sy in _COARSE_SCALES:
                dy, dx, _ = _phase(coarse_target, _grey(_warp(moving, sx, sy, 0.0, 0.0, coarse_size)))
                coarse.append((_residual(coarse_target, moving, sx, sy, dx, dy), mirrored, float(sx), float(sy), dx, dy))
    coarse.sort(key=lambda entry: entry[0])
    if coarse[0][0] > MAX_COARSE_RESIDUAL:  # nothing lays one over the other even roughly: no need to refine
        return None
    fine_target, fine_size = _grey_at(a, REFINE_SIDE)
    fine = fine_size[0] / coarse_size[0]
    refined = []
    for _, mirrored, sx, sy, tx, ty in coarse[:COARSE_KEPT]:
        moving = (ImageOps.mirror(grey_b) if mirrored else grey_b).resize(fine_size, Image.Resampling.BILINEAR)
        refined.append((*_refine(fine_target, moving, sx, sy, tx * fine, ty * fine, max(2.0, fine)), mirrored))
    _, sx, sy, tx, ty, mirrored = min(refined, key=lambda entry: entry[0])
    # the shift at the working size, to a fraction of a pixel
    moving = ImageOps.mirror(grey_b) if mirrored else grey_b
    scale = a.width / fine_size[0]
    dy, dx, _ = _phase(_grey(a), _grey(_warp(moving, sx, sy, tx * scale, ty * scale, a.size)), reach=1.5 * scale)
    return mirrored, sx, sy, tx * scale + dx, ty * scale + dy


def _grey_at(image: Image.Image, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    size = (max(8, image.width * side // max(image.size)), max(8, image.height * side // max(image.size)))
    return _grey(image.resize(size, Image.Resampling.BILINEAR)), size


def _refine(target: np.ndarray, moving: Image.Image, sx: float, sy: float, tx: float, ty: float,
            fine_step: float) -> tuple[float, float, float, float, float]:
    """(residual, sx, sy, tx, ty): coordinate descent on the scales, the shift found again by phase correlation."""
    size = (target.shape[1], target.shape[0])
    dy, dx, _ = _phase(target, _grey(_warp(moving, sx, sy, tx, ty, size)), reach=2 * fine_step)
    tx, ty = tx + dx, ty + dy
    score = _residual(target, moving, sx, sy, tx, ty)
    step = (_COARSE_SCALES[1] - _COARSE_SCALES[0]) / 2
    while step > 0.002:
        improved = False
        for dsx, dsy in ((step, 0), (-step, 0), (0, step), (0, -step)):
            candidate = _residual(target, moving, sx + dsx, sy + dsy, tx, ty)
            if candidate < score:
                score, sx, sy, improved = candidate, sx + dsx, sy + dsy, True
        if not improved:
            dy, dx, _ = _phase(target, _grey(_warp(moving, sx, sy, tx, ty, size)), reach=2.0)
            moved_score = _residual(target, moving, sx, sy, tx + dx, ty + dy)
            if moved_score < score:
                score, tx, ty = moved_score, tx + dx, ty + dy
            else:
                step /= 2
    return score, sx, sy, tx, ty


def _residual(target: np.ndarray, moving: Image.Image, sx: float, sy: float, tx: float, ty: float) -> float:
    height, width = target.shape
    warped = _grey(_warp(moving, sx, sy, tx, ty, (width, height)))
    dy, dx = int(BORDER * height) + 1, int(BORDER * width) + 1
    return float(np.abs(target - warped)[dy : height - dy, dx : width - dx].mean())


def _warp(image: Image.Image, sx: float, sy: float, tx: float, ty: float, size: tuple[int, int]) -> Image.Image:
    """`image` scaled about its centre by (sx, sy), then moved by (tx, ty) pixels, into a frame of `size`."""
    cx, cy = size[0] / 2, size[1] / 2
    return image.transform(size, Image.Transform.AFFINE, (1 / sx, 0, cx - (cx + tx) / sx, 0, 1 / sy, cy - (cy + ty) / sy),
                           resample=Image.Resampling.BILINEAR)


def _grey(image: Image.Image) -> np.ndarray:
    if image.mode == "L":
        return np.asarray(image, dtype=np.float32)
    return np.asarray(image.convert("RGB"), dtype=np.float32) @ _LUMA


def _phase(target: np.ndarray, moving: np.ndarray, reach: float = MAX_SHIFT) -> tuple[float, float, float]:
    """The shift (dy, dx) that lays `moving` over `target`, to a fraction of a pixel, and the correlation peak;
    looked for within `reach` (a share of each side, or pixels when 1 or more): on flat pictures the whitened
    correlation has spurious peaks far away."""
    spectrum = np.fft.rfft2(target - target.mean()) * np.conj(np.fft.rfft2(moving - moving.mean()))
    surface = np.fft.irfft2(spectrum / (np.abs(spectrum) + 1e-6), s=target.shape)
    peak = np.unravel_index(int(np.argmax(surface + _outside(surface.shape, reach))), surface.shape)
    shift = []
    for axis, (index, length) in enumerate(zip(peak, surface.shape, strict=True)):
        before, after = list(peak), list(peak)
        before[axis], after[axis] = (index - 1) % length, (index + 1) % length
        low, mid, high = surface[tuple(before)], surface[peak], surface[tuple(after)]
        curve = low - 2 * mid + high
        offset = float(np.clip(0.5 * (low - high) / curve, -0.5, 0.5)) if abs(curve) > 1e-12 else 0.0
        position = index + offset
        shift.append(position if position <= length / 2 else position - length)
    return shift[0], shift[1], float(surface[peak])


@functools.lru_cache(maxsize=64)
def _outside(shape: tuple[int, ...], reach: float) -> np.ndarray:
    """-inf where a shift is beyond `reach` (see _phase), 0 within."""
    allowed = np.ones(shape, dtype=bool)
    for axis, length in enumerate(shape):
        limit = reach if reach >= 1 else reach * length
        offsets = np.arange(length)
        near = np.minimum(offsets, length - offsets) <= limit
        allowed &= near[:, None] if axis == 0 else near[None, :]
    return np.where(allowed, 0.0, -np.inf)


def _tolerant(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per pixel, the smaller of the differences to the other picture's pixel and its eight neighbours, both ways."""
    return np.maximum(_nearest_difference(first, second), _nearest_difference(second, first))


def _nearest_difference(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    padded = np.pad(second, [(1, 1), (1, 1)] + [(0, 0)] * (second.ndim - 2), mode="edge")
    height, width = first.shape[:2]
    best = np.full(first.shape[:2], np.inf, dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            difference = np.abs(first - padded[dy : dy + height, dx : dx + width])
            if difference.ndim == 3:
                difference = np.maximum(difference[..., 0], difference[..., 1])
            np.minimum(best, difference, out=best)
    return best


def _tolerant_colour(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Colour (Cb, Cr) compared at half size, as JPEG keeps it; returned at full size."""
    def half(pixels: np.ndarray) -> np.ndarray:
        even = pixels[: pixels.shape[0] // 2 * 2, : pixels.shape[1] // 2 * 2]
        return even.reshape(even.shape[0] // 2, 2, even.shape[1] // 2, 2, 2).mean(axis=(1, 3))

    difference = _tolerant(half(first), half(second))
    full = np.repeat(np.repeat(difference, 2, axis=0), 2, axis=1)
    out = np.zeros(first.shape[:2], dtype=np.float32)
    out[: full.shape[0], : full.shape[1]] = full
    return out
