"""Photo metadata as the rest of the program sees it: what a photo's header said, dates as a person
types them, and distances on the Earth. Reading headers is indexing's job (photoseek/indexing/metadata.py).

Dates are kept as the photo's own wall-clock time ("taken at 17:03 in Kyoto"), in seconds as if that
time were UTC, with the camera's UTC offset beside it where it wrote one. Filters compare wall-clock
times, which is what "taken after 2019-06-01" means to the person who took the photo; the instant in
UTC is `taken - offset` when the offset is known.
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_DATE = re.compile(r"^\s*(\d{4})[:\-](\d{2})[:\-](\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?(?:\.(\d+))?)?\s*(Z|[+\-]\d{2}:?\d{2})?\s*$")


@dataclass(frozen=True)
class PhotoMetadata:
    """What a photo's header says (None where it says nothing), and its perceptual hashes (from its pixels:
    photoseek/indexing/perceptual.py), which tell a copy from a look-alike."""

    taken: float | None = None  # wall-clock time of capture, seconds as if UTC
    taken_offset_minutes: int | None = None  # the camera's UTC offset at capture, when recorded
    camera: str | None = None  # "Canon EOS 5D Mark IV": make and model without the make twice
    lens: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    width: int | None = None  # as displayed (orientation applied)
    height: int | None = None
    orientation: int | None = None  # EXIF 1-8
    phash: int | None = None  # 64-bit pHash, signed
    phash_mirror: int | None = None  # the same of the mirror image

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def parse_when(text: str, end_of_day: bool = False) -> float:
    """A date or date-time a person types (2019-06-14, 2019-06-14T17:03, 2019:06:14 17:03:22) as wall-clock
    seconds, the scale `PhotoMetadata.taken` uses; with `end_of_day` a bare date means the end of that day
    (so that "before 2019-06-30" includes June 30). ValueError when it is not a date."""
    taken, _ = parse_date(text)
    if taken is None:
        raise ValueError(f"{text!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)")
    if end_of_day and _DATE.match(text) and _DATE.match(text).group(4) is None:  # type: ignore[union-attr]
        taken += 86_400
    return taken


def parse_near(text: str) -> tuple[float, float, float]:
    """"LAT,LON,KM" (35.01,135.77,5) as three numbers; ValueError otherwise."""
    parts = [p.strip() for p in text.split(",")]
    try:
        latitude, longitude, km = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not LAT,LON,KM (e.g. 35.01,135.77,5)") from None
    if not all(math.isfinite(v) for v in (latitude, longitude, km)):
        raise ValueError(f"{text!r} is not LAT,LON,KM (e.g. 35.01,135.77,5)")
    return latitude, longitude, km


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a spherical Earth (haversine; within 0.5 % of the ellipsoid)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))


def parse_date(text: str | None) -> tuple[float | None, int | None]:
    """Wall-clock seconds and the UTC offset in minutes (None when not written) of an EXIF, XMP or ISO date."""
    match = _DATE.match(text or "")
    if not match:
        return None, None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        parts = (int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
        if not (1800 <= parts[0] <= 9999 and 1 <= parts[1] <= 12 and 1 <= parts[2] <= 31 and parts[3] < 24 and parts[4] < 60 and parts[5] < 61):
            return None, None  # "0000:00:00 00:00:00" is how cameras without a clock say "unknown"
        datetime(*parts[:5], min(parts[5], 59))  # 30 February is refused here, not rolled into March
        seconds = float(calendar.timegm((*parts, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None, None
    if fraction:
        seconds += float(f"0.{fraction}")
    offset = None
    if zone == "Z":
        offset = 0
    elif zone:
        digits = zone[1:].replace(":", "")
        offset = (int(digits[:2]) * 60 + int(digits[2:])) * (1 if zone[0] == "+" else -1)
        if abs(offset) > 14 * 60:
            offset = None
    return seconds, offset
