"""Decode image files safely and cheaply into RGB.

Every way a file can be bad (missing, unreadable, not an image, truncated, a decompression bomb)
becomes an `ImageDecodeError` with a reason a person can read. JPEGs are decoded at reduced scale
when the model needs far fewer pixels than the file has (Pillow's `draft`), which is where most of
the indexing time goes on a CPU.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from photoseek.errors import ImageDecodeError
from photoseek.indexing.metadata import read_metadata
from photoseek.indexing.perceptual import perceptual_hashes
from photoseek.photo_metadata import PhotoMetadata

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
try:  # HEIC/HEIF through pillow-heif (in requirements.txt; without it such files are simply not listed)
    import pillow_heif

    pillow_heif.register_heif_opener()
    IMAGE_EXTENSIONS |= {".heic", ".heif"}
except ImportError:
    pass

# Camera RAW files, through LibRaw (rawpy, the `raw` extra): the camera's embedded full-size JPEG preview
# where there is one (what the camera showed, and 50-100x faster than developing the sensor data), else
# the sensor data developed at half size. Without rawpy such files are not listed.
RAW_EXTENSIONS = {".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"}
try:
    import rawpy

    IMAGE_EXTENSIONS |= RAW_EXTENSIONS
except ImportError:
    rawpy = None  # type: ignore[assignment]


def is_raw(path: str | Path) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in RAW_EXTENSIONS


# Same default as Pillow's own guard (about 179 megapixels), enforced before any pixel is decoded.
DEFAULT_MAX_PIXELS = 178_956_970

# Pillow's warnings as it reads a file are set aside once, here, for Pillow's own modules, and not per call:
# warnings.catch_warnings is not thread-safe (files decode in threads; one thread leaving it can put another's
# filters back for the whole process, and a warning of ours is then lost). What they say is handled: a header
# Pillow reads around (corrupt EXIF, a tag with a value too many) leaves the picture fine, and the pixel count
# Pillow warns of at half its limit (89.5 MP, which a 108 MP phone photo passes) is for `max_pixels` to decide.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning, module=r"PIL\.")


def load_rgb(source: str | Path | bytes | BinaryIO | Image.Image, min_side: int | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS, raw: bool = False) -> Image.Image:
    """Decode `source` into an RGB image, EXIF orientation applied.

    With `min_side`, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay
    at least `min_side` pixels, so the result is only as large as the model needs.
    """
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(source) or source)
    return decode_photo(source, min_side, max_pixels, raw, describe=False)[0]


def decode_photo(source: str | Path | bytes | BinaryIO, min_side: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, raw: bool = False,
                 describe: bool = True) -> tuple[Image.Image, PhotoMetadata]:
    """`load_rgb` and, with `describe`, what indexing keeps of the photo: its header's metadata and its
    perceptual hashes (read once the pixels are loaded). Queries, thumbnails and an encoder server's images
    need only the pixels (`describe=False`: an empty PhotoMetadata).
    `raw`: the bytes are a camera RAW file (the caller knows from the name; see RAW_EXTENSIONS)."""
    if isinstance(source, (str, Path)):
        raw = raw or is_raw(source)
        source = read_file(Path(source))
    if raw:
        return _decode_raw(source if isinstance(source, bytes) else source.read(), min_side, max_pixels, describe)
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError("empty file (0 bytes)")
        source = io.BytesIO(source)
    try:
        image = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(f"decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except (OSError, Warning) as error:  # a Warning: a caller's own filters made one an error
        raise ImageDecodeError(f"cannot read image: {error}") from None
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageDecodeError(f"decompression bomb: {width}x{height} pixels exceeds the limit of {max_pixels}")
        if min_side and image.format == "JPEG":  # Pillow opens every JPEG as L, RGB or CMYK: draft keeps the mode
            image.draft(None, (min_side, min_side))
        image.load()
        rgb = to_rgb(ImageOps.exif_transpose(image) or image)
        if not describe:
            return rgb, PhotoMetadata()
        # after load: a PNG's eXIf chunk may follow its pixels, and a failed decode must fail here, not be swallowed
        phash, phash_mirror = perceptual_hashes(rgb)
        return rgb, replace(read_metadata(image, size=(width, height)), phash=phash, phash_mirror=phash_mirror)
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as error:
        message = str(error) or error.__class__.__name__
        if "truncated" in message.lower():
            raise ImageDecodeError(f"truncated image: {message}") from None
        raise ImageDecodeError(f"corrupt image: {message}") from None


def read_file(path: Path) -> bytes:
    """The whole file, with OS errors turned into reasons."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a directory") from None
    except OSError as error:
        raise ImageDecodeError(f"cannot read file: {error.strerror or error}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, the way a person would expect it to look."""
    mode = image.mode
    if mode in ("P", "L", "RGB") and "transparency" in image.info:  # a colour key (PNG tRNS): those pixels are transparent
        image, mode = image.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 255.0)
        array = np.clip(np.rint(array / top * 255.0), 0, 255).astype(np.uint8)  # rounded: truncating darkens by half a level
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")  # Pillow has no La -> RGBA
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# Enough pixels for the perceptual hash (32x32): a JPEG decodes at 1/8 scale, a few milliseconds for 12 MP.
HASH_MIN_SIDE = 64


def photo_metadata(path: Path) -> PhotoMetadata:
    """A file's metadata and perceptual hashes, decoded at the smallest scale that serves (no model):
    rows indexed before these were kept."""
    return decode_photo(read_file(path), min_side=HASH_MIN_SIDE, raw=is_raw(path))[1]


# LibRaw's `flip` (0, 3, 5, 6: EXIF orientations 1, 3, 8, 6) as the turn that shows the picture upright
_FLIP_TO_UPRIGHT = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def _libraw_taken(raw: rawpy.RawPy) -> float | None:
    """When the photo was taken, as its camera's clock read (EXIF dates carry no zone, and photos keep
    that wall clock as if it were UTC); None where the file says nothing (LibRaw's 0)."""
    stamp: datetime = raw.other.timestamp  # rawpy: LibRaw's time_t as local time, i.e. the file's wall clock again
    if stamp.timestamp() == 0:
        return None
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def _decode_raw(data: bytes, min_side: int | None, max_pixels: int, describe: bool) -> tuple[Image.Image, PhotoMetadata]:
    if rawpy is None:
        raise ImageDecodeError("a camera RAW file, and rawpy is not installed (pip install 'photoseek[raw]')")
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            try:
                thumb = raw.extract_thumb()
            except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                thumb = None
            if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
                image, metadata = decode_photo(bytes(thumb.data), min_side, max_pixels, describe=describe)
                if metadata.taken is not None and _libraw_taken(raw) is None:
                    # LibRaw writes its own date into the preview's EXIF; with none in the file it writes 1970
                    metadata = replace(metadata, taken=None, taken_offset_minutes=None)
            else:
                if sizes.width * sizes.height > max_pixels:
                    raise ImageDecodeError(f"decompression bomb: {sizes.width}x{sizes.height} pixels exceeds the limit of {max_pixels}")
                pixels = thumb.data if thumb is not None else raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
                image = to_rgb(Image.fromarray(np.asarray(pixels)))
                if thumb is not None and sizes.flip in _FLIP_TO_UPRIGHT:  # LibRaw turns what it develops, not a bitmap preview
                    image = image.transpose(_FLIP_TO_UPRIGHT[sizes.flip])
                metadata = PhotoMetadata()
                if describe:
                    phash, phash_mirror = perceptual_hashes(image)
                    metadata = PhotoMetadata(taken=_libraw_taken(raw), phash=phash, phash_mirror=phash_mirror)
    except ImageDecodeError:
        raise
    except rawpy.LibRawFileUnsupportedError:
        raise ImageDecodeError("not a RAW format LibRaw reads") from None
    except rawpy.LibRawIOError:  # the file is already in memory: LibRaw read past its end
        raise ImageDecodeError("truncated RAW file: its data ends before the image does") from None
    except (rawpy.LibRawError, OSError, ValueError) as error:
        detail = error.args[0] if error.args else ""  # LibRaw's own words come as bytes
        text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(error)
        raise ImageDecodeError(f"corrupt RAW file: {error.__class__.__name__}: {text}") from None
    if not describe:
        return image, metadata
    # the sensor's size, as displayed (a preview can be smaller; flip 5/6 turns it a quarter)
    width, height = (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)
    return image, replace(metadata, width=width, height=height)
