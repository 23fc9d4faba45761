"""A perceptual hash of each photo (pHash: the signs of the lowest 8x8 cosine frequencies of a 32x32 grey
thumbnail against their median), and the same for its mirror image, kept with each row so that
duplicates can be told apart from photos that only look alike to a CLIP model.

Written here rather than taken from `imagehash` (which needs SciPy for its DCT): it is twenty lines of
numpy, and the mirror's hash falls out of the same transform (mirroring flips the sign of the odd
horizontal frequencies). Measured on ten real photographs (skimage's): resized and recompressed
copies 0-2 bits apart, mirrored 0, cropped by 5 % 2-14, different photographs 20 or more.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIDE = 32
_LOW = 8
_k = np.arange(_SIDE)
_DCT = np.cos(np.pi * (2 * _k[None, :] + 1) * _k[:, None] / (2 * _SIDE)) * np.sqrt(2 / _SIDE)
_DCT[0] /= np.sqrt(2)
_MIRROR = np.where(np.arange(_LOW) % 2 == 1, -1.0, 1.0)[None, :]  # x -> -x flips odd horizontal frequencies


def perceptual_hashes(image: Image.Image) -> tuple[int, int]:
    """The 64-bit pHash of `image` and of its mirror image (below 2^63: they fit Milvus's INT64)."""
    grey = np.asarray(image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:_LOW, :_LOW]
    return _bits(low), _bits(low * _MIRROR)


def hash_distance(a: int, a_mirror: int, b: int) -> int:
    """Bits that differ between `b` and the nearer of `a` and its mirror (a mirrored copy is a copy)."""
    return min(_popcount(a ^ b), _popcount(a_mirror ^ b))


def _bits(coefficients: np.ndarray) -> int:
    flat = coefficients.flatten()
    flat = np.where(np.abs(flat) < 1e-9 * max(1.0, abs(flat[0])), 0.0, flat)  # a flat picture's rounding noise is no signal
    above = flat > np.median(flat[1:])
    above[0] = False  # the constant term says how bright, not what is where
    # the first (top) bit is always 0, so the value fits Milvus's signed INT64 as it is
    return int("".join("1" if bit else "0" for bit in above), 2)


def _popcount(value: int) -> int:
    return bin(value & ((1 << 64) - 1)).count("1")
