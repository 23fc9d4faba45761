"""Search filters as Milvus expressions (escaped literals only) and the geometry of `--near`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from photoseek.errors import InvalidArgumentError
from photoseek.photo_metadata import distance_km
from photoseek.store.records import UNKNOWN_COORDINATE, UNKNOWN_TIME


def ranges_outside(prefix: str, skipped: list[str], per_query: int = 100) -> Iterator[str]:
    """Expressions for the paths under `prefix` but under none of the sorted `skipped` prefixes: one query per
    `per_query` of them, each a slice of the path range, so that a folder with 10^5 subfolders never makes
    one enormous expression. (Of two prefixes ending in a separator, neither a prefix of the other, every
    path under the smaller sorts below the larger, so the slices [s_0, s_100), [s_100, s_200) ... are exact.)"""
    end = prefix + chr(0x10FFFF)
    bounds = [prefix, *skipped[per_query::per_query], end]
    for i, (low, high) in enumerate(zip(bounds, bounds[1:], strict=False)):
        clauses = [f"path >= {quote(low)}", f"path < {quote(high)}"]
        clauses += [f"not {SearchFilter(s).expression()}" for s in skipped[i * per_query:(i + 1) * per_query]]
        yield " and ".join(clauses)


def quote(value: str) -> str:
    """A Milvus string literal that holds `value` verbatim, whatever characters it has (a raw line break ends a
    literal for Milvus's parser: written as an escape, as are backslashes and quotes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


@dataclass(frozen=True)
class Near:
    """Photos taken within `km` of a position."""

    latitude: float
    longitude: float
    km: float

    def __post_init__(self) -> None:
        if not (-90 <= self.latitude <= 90 and -180 <= self.longitude <= 180):
            raise InvalidArgumentError(f"near: {self.latitude},{self.longitude} is not a position (latitude -90..90, longitude -180..180)")
        if not 0 < self.km <= 20_100:
            raise InvalidArgumentError(f"near: the distance must be more than 0 and at most 20100 km, got {self.km}")

    def contains(self, latitude: float, longitude: float) -> bool:
        return latitude != UNKNOWN_COORDINATE and distance_km(self.latitude, self.longitude, latitude, longitude) <= self.km

    def bounds(self) -> tuple[float, float, list[tuple[float, float]]]:
        """South, north and the longitude ranges (two where the circle crosses 180°) of a box around the circle."""
        dlat = self.km / 111.19 * 1.001  # a degree of latitude is 110.57-111.69 km; the margin covers the spread
        south, north = max(-90.0, self.latitude - dlat), min(90.0, self.latitude + dlat)
        if abs(self.latitude) + dlat >= 89.0:  # the circle reaches a pole's cap: every longitude
            return south, north, [(-180.0, 180.0)]
        dlon = dlat / math.cos(math.radians(abs(self.latitude) + dlat))
        if dlon >= 180:
            return south, north, [(-180.0, 180.0)]
        west, east = self.longitude - dlon, self.longitude + dlon
        if west < -180:
            return south, north, [(west + 360, 180.0), (-180.0, east)]
        if east > 180:
            return south, north, [(west, 180.0), (-180.0, east - 360)]
        return south, north, [(west, east)]

    def box(self) -> str:
        """The box as an expression for the store to narrow the rows; `contains` decides."""
        south, north, spans = self.bounds()
        longitudes = " or ".join(f"(longitude >= {w!r} and longitude <= {e!r})" for w, e in spans)
        return f"(latitude >= {south!r} and latitude <= {north!r} and ({longitudes}) and longitude != {UNKNOWN_COORDINATE!r})"


@dataclass(frozen=True)
class SearchFilter:
    """Optional restrictions on a search; every value is passed as an escaped literal.

    taken_after/taken_before are wall-clock seconds (`photoseek.photo_metadata.parse_when`); `camera` matches
    whole words of make and model, ignoring case ("iphone", "eos 5d"); photos whose header lacks a value
    never pass its filter."""

    path_prefix: str | None = None
    extensions: tuple[str, ...] = ()
    modified_after: float | None = None
    modified_before: float | None = None
    taken_after: float | None = None
    taken_before: float | None = None
    camera: str | None = None
    near: Near | None = None
    min_width: int | None = None

    @property
    def uses_metadata(self) -> bool:
        return any(v is not None for v in (self.taken_after, self.taken_before, self.camera, self.near, self.min_width))

    def expression(self) -> str:
        clauses = []
        if self.path_prefix:
            # A range on the string, not LIKE: no wildcard in a user's folder name can widen it.
            clauses.append(f"(path >= {quote(self.path_prefix)} and path < {quote(self.path_prefix + chr(0x10FFFF))})")
        if self.extensions:
            clauses.append("ext in [" + ", ".join(quote(e.lower().lstrip(".")) for e in self.extensions) + "]")
        if self.modified_after is not None:
            clauses.append(f"mtime >= {float(self.modified_after)!r}")
        if self.modified_before is not None:
            clauses.append(f"mtime < {float(self.modified_before)!r}")
        if self.taken_after is not None:
            clauses.append(f"taken >= {float(self.taken_after)!r}")
        if self.taken_before is not None:
            clauses.append(f"taken < {float(self.taken_before)!r} and taken > {UNKNOWN_TIME!r}")
        if self.camera:
            clauses.append(f"array_contains(camera_words, {quote(' '.join(self.camera.lower().split()))})")
        if self.min_width is not None:
            clauses.append(f"width >= {int(self.min_width)}")
        if self.near is not None:
            clauses.append(self.near.box())
        return " and ".join(clauses)


def photo_filter(taken_after: str | None = None, taken_before: str | None = None, camera: str | None = None,
                 near: str | None = None, min_width: int | None = None) -> dict[str, Any]:
    """SearchFilter's photo fields from what a person typed (the CLI's and the HTTP API's spelling);
    InvalidArgumentError names the argument that is wrong."""
    from photoseek.photo_metadata import parse_near, parse_when

    fields: dict[str, Any] = {}
    for name, text, end_of_day in (("taken_after", taken_after, False), ("taken_before", taken_before, True)):
        if text is not None and text.strip():
            try:
                fields[name] = parse_when(text.strip(), end_of_day=end_of_day)
            except ValueError as error:
                raise InvalidArgumentError(f"{name}: {error}") from None
    if camera is not None and camera.strip():
        fields["camera"] = camera.strip()
    if near is not None and near.strip():
        try:
            fields["near"] = Near(*parse_near(near))
        except ValueError as error:
            raise InvalidArgumentError(f"near: {error}") from None
    if min_width is not None:
        if isinstance(min_width, bool) or not isinstance(min_width, int) or min_width < 1:
            raise InvalidArgumentError(f"min_width must be a whole number of pixels, 1 or more, got {min_width!r}")
        fields["min_width"] = min_width
    return fields
