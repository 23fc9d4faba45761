"""Photo metadata read at index time: when a photo was taken, with what camera and lens, where, and its
size as a person sees it (EXIF orientation applied).

EXIF comes through Pillow (JPEG, PNG eXIf, TIFF, WebP, and HEIC through pillow-heif); an XMP packet fills
the date and position where EXIF has none (phones and editors that write only XMP). Nothing here
decodes pixels: a file's header is enough.
Dates are wall-clock times (see photoseek/photo_metadata.py).
"""

from __future__ import annotations

import math
import re
from typing import Any

from PIL import ExifTags, Image

from photoseek.photo_metadata import PhotoMetadata, parse_date

# Orientations 5-8 turn the picture a quarter: its width as seen is the stored height.
_QUARTER_TURNS = {5, 6, 7, 8}
_XMP_DATE_KEYS = ("exif:DateTimeOriginal", "photoshop:DateCreated", "xmp:CreateDate")
_XMP_GPS = re.compile(r"^\s*(\d+),(\d+(?:\.\d+)?)(?:,(\d+(?:\.\d+)?))?([NSEW])\s*$")
MAX_TEXT = 120  # make, model and lens strings: longer values are junk from a broken writer


def read_metadata(image: Image.Image, size: tuple[int, int] | None = None) -> PhotoMetadata:
    """The metadata of an opened image; `size`: its stored size when it was decoded at reduced scale.
    A malformed header yields what could be read (Pillow's warnings about it: photoseek/indexing/decode.py)."""
    size = size or image.size
    try:
        exif = image.getexif()
    except Exception:  # a broken EXIF block must not cost the photo its place in the index
        exif = Image.Exif()
    details = _ifd(exif, ExifTags.IFD.Exif)
    orientation = _int(exif.get(ExifTags.Base.Orientation))
    if orientation is not None and not 1 <= orientation <= 8:
        orientation = None
    width, height = size
    if orientation in _QUARTER_TURNS:
        width, height = height, width
    taken, offset = _exif_date(details.get(ExifTags.Base.DateTimeOriginal) or details.get(ExifTags.Base.DateTimeDigitized)
                               or exif.get(ExifTags.Base.DateTime),
                               details.get(ExifTags.Base.OffsetTimeOriginal) or details.get(ExifTags.Base.OffsetTime))
    latitude, longitude = _gps(_ifd(exif, ExifTags.IFD.GPSInfo))
    xmp = _xmp_text(image)
    if xmp and taken is None:
        for key in _XMP_DATE_KEYS:
            taken, offset = parse_date(_xmp_value(xmp, key))
            if taken is not None:
                break
    if xmp and latitude is None:
        latitude = _xmp_coordinate(_xmp_value(xmp, "exif:GPSLatitude"))
        longitude = _xmp_coordinate(_xmp_value(xmp, "exif:GPSLongitude"))
        if latitude is None or longitude is None:
            latitude = longitude = None
    return PhotoMetadata(taken, offset, _camera(exif.get(ExifTags.Base.Make), exif.get(ExifTags.Base.Model)),
                         _text(details.get(ExifTags.Base.LensModel)), latitude, longitude, width, height, orientation)


def _ifd(exif: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(tag))
    except Exception:
        return {}


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = " ".join(value.replace("\x00", " ").split())
    return cleaned[:MAX_TEXT] or None


def _camera(make: object, model: object) -> str | None:
    make_text, model_text = _text(make), _text(model)
    if not model_text:
        return make_text
    if not make_text:
        return model_text
    # "Canon" + "Canon EOS 5D" and "NIKON CORPORATION" + "NIKON D750": the model already names the maker
    if model_text.lower().startswith(make_text.split()[0].lower()):
        return model_text
    return f"{make_text} {model_text}"


def _exif_date(value: object, offset: object) -> tuple[float | None, int | None]:
    taken, zone = parse_date(_text(value) or "")
    if taken is None:
        return None, None
    if zone is None:
        _, zone = parse_date(f"2000:01:01 00:00:00{_text(offset) or ''}")
    return taken, zone


def _gps(gps: dict[int, Any]) -> tuple[float | None, float | None]:
    latitude = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), 90)
    longitude = _degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef), 180)
    if latitude is None or longitude is None or (latitude == 0 and longitude == 0):  # 0,0: a receiver without a fix
        return None, None
    return latitude, longitude


def _degrees(value: object, reference: object, limit: float) -> float | None:
    try:
        parts = [float(v) for v in value]  # type: ignore[attr-defined]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not parts or len(parts) > 3 or any(math.isnan(p) for p in parts):
        return None
    degrees = sum(p / 60**i for i, p in enumerate(parts))
    if (_text(reference) or "").upper()[:1] in ("S", "W"):
        degrees = -degrees
    return degrees if abs(degrees) <= limit else None


def _xmp_text(image: Image.Image) -> str | None:
    raw = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return raw if isinstance(raw, str) else None


def _xmp_value(xmp: str, key: str) -> str | None:
    """A property as an attribute (key="value") or an element (<key>value</key>) of the packet."""
    match = re.search(rf'{re.escape(key)}\s*=\s*"([^"]*)"', xmp) or re.search(rf"<{re.escape(key)}>([^<]*)</{re.escape(key)}>", xmp)
    return match.group(1) if match else None


def _xmp_coordinate(text: str | None) -> float | None:
    """XMP writes positions as "35,36.0N" (degrees, decimal minutes) or "35,0,36N"."""
    match = _XMP_GPS.match(text or "")
    if not match:
        return None
    degrees, minutes, seconds, hemisphere = match.groups()
    value = float(degrees) + float(minutes) / 60 + float(seconds or 0) / 3600
    if hemisphere in "SW":
        value = -value
    return value if abs(value) <= (90 if hemisphere in "NS" else 180) else None
