"""The search filters of HTTP requests: the fields every search route takes, read into a SearchFilter.

Everything here comes from a request, so it is checked before it reaches the store: file types are
short alphanumeric words, folders absolute, times finite, photo fields bounded in length and parsed
by the same code as the CLI's (milvus_store.photo_filter). Malformed values raise
InvalidArgumentError, which the API answers with 400 and the message.
"""

from __future__ import annotations

import math
import os
from datetime import datetime

from fastapi import Query
from pydantic import BaseModel, Field

from photoseek.errors import InvalidArgumentError
from photoseek.store.filters import SearchFilter, photo_filter


class PhotoFilterFields(BaseModel):
    """Filters on what photos' headers say; a photo whose header lacks the value never passes."""

    taken_after: str | None = Field(default=None, max_length=40, description="taken on or after this date (YYYY-MM-DD[THH:MM], the photo's own clock)")
    taken_before: str | None = Field(default=None, max_length=40, description="taken before this date-time, or on or before this date")
    camera: str | None = Field(default=None, max_length=100, description="whole words of the camera's make and model, any case (iphone, eos 5d)")
    near: str | None = Field(default=None, max_length=80, description="LAT,LON,KM: taken within KM kilometres of a position")
    min_width: int | None = Field(default=None, ge=1, le=1_000_000, description="at least this many pixels wide, as displayed")


class FilterBody(PhotoFilterFields):
    folder: str | None = Field(None, description="only images under this folder")
    ext: list[str] | None = Field(None, description="only these file types, e.g. ['jpg', 'png']")
    modified_after: str | None = Field(None, description="ISO date/time or Unix seconds")
    modified_before: str | None = None


def _parse_time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or abs(number) > 1e11:  # nan, inf, 1e400 and dates beyond year 5000
            raise InvalidArgumentError(f"{name} must be a finite date (Unix seconds or ISO), got {value!r}")
        return number
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise InvalidArgumentError(f"{name} must be an ISO date/time (2024-05-01, 2024-05-01T12:00) or Unix seconds, got {value!r}") from None


def make_filter(folder: str | None, ext: list[str] | str | None, after: str | None, before: str | None,
                photo: PhotoFilterFields | None = None) -> SearchFilter | None:
    extensions: list[str] = []
    for part in ([ext] if isinstance(ext, str) else ext or []):
        extensions += [e.strip().lower().lstrip(".") for e in part.split(",") if e.strip()]
    for e in extensions:
        if not e.isalnum() or len(e) > 10:
            raise InvalidArgumentError(f"ext must be file types such as jpg or png, got {e!r}")
    if folder is not None and folder.strip() and not os.path.isabs(folder):
        raise InvalidArgumentError(f"folder must be an absolute path, got {folder!r}")
    prefix = (folder.rstrip("/") + "/") if folder and folder.strip() else None
    photo = photo or PhotoFilterFields()
    search_filter = SearchFilter(prefix, tuple(extensions), _parse_time(after, "modified_after"), _parse_time(before, "modified_before"),
                                 **photo_filter(photo.taken_after, photo.taken_before, photo.camera, photo.near, photo.min_width))
    return search_filter if search_filter.expression() else None


def query_filter(folder: str | None = None, ext: list[str] | None = Query(None), modified_after: str | None = None,
                 modified_before: str | None = None, taken_after: str | None = Query(None, max_length=40),
                 taken_before: str | None = Query(None, max_length=40), camera: str | None = Query(None, max_length=100),
                 near: str | None = Query(None, max_length=80),
                 min_width: int | None = Query(None, ge=1, le=1_000_000)) -> SearchFilter | None:
    """The filter fields every GET search route takes (a FastAPI dependency)."""
    return make_filter(folder, ext, modified_after, modified_before,
                       PhotoFilterFields(taken_after=taken_after, taken_before=taken_before, camera=camera, near=near,
                                         min_width=min_width))
