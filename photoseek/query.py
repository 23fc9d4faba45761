"""Composed queries: a weighted sum of text and image terms, as rclip composes them.

    golden retriever            text
    2:golden retriever          text, weight 2
    ./pool.jpg  /abs/pool.jpg   an image file (a path that starts like one, or an existing file)
    id:1234567                  an indexed image, by id (its stored vector: nothing is encoded)

`--subtract` terms (and `subtract=` in the API) take the negative weight. Each term's vector is
normalised before weighting, so weights mean the same for text and images.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from photoseek.errors import InvalidArgumentError

_WEIGHT = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*:(?!//)(.*)$")
_IMAGE_ID = re.compile(r"^id:(\d{1,19})$")
MAX_TERMS = 16


# weights scale unit vectors summed in float32: past this, a sum overflows (39 nines gave every result a null score)
MAX_WEIGHT = 1e6


@dataclass(frozen=True)
class QueryTerm:
    """One part of a composed query: exactly one of `text`, `image` (a file path) or `image_id`."""

    text: str | None = None
    image: str | None = None
    image_id: int | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        given = [value is not None for value in (self.text, self.image, self.image_id)]
        if sum(given) != 1:
            raise InvalidArgumentError("a query term is exactly one of: text, an image file, an indexed image id")
        if self.text is not None and not self.text.strip():
            raise InvalidArgumentError("a text term is empty")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) \
                or self.weight == 0 or abs(self.weight) > MAX_WEIGHT:
            raise InvalidArgumentError(f"a term's weight must be a number other than 0, from -{MAX_WEIGHT:g} to "
                                       f"{MAX_WEIGHT:g}, got {self.weight!r}")

    @property
    def label(self) -> str:
        what = self.text if self.text is not None else self.image if self.image is not None else f"id:{self.image_id}"
        return f"{self.weight:g}:{what}"


def parse_term(spec: str, sign: float = 1.0, allow_paths: bool = True) -> QueryTerm:
    """A term written as on the command line (see the module docstring). `allow_paths=False` (the HTTP
    API) refuses file paths: a request may name indexed images by id only."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError("a query term is empty")
    weight, body = 1.0, spec.strip()
    match = _WEIGHT.match(body)
    if match and match.group(2).strip():
        weight, body = float(match.group(1)), match.group(2).strip()
    weight *= sign
    by_id = _IMAGE_ID.match(body)
    if by_id:
        return QueryTerm(image_id=int(by_id.group(1)), weight=weight)
    looks_like_path = body.startswith(("./", "../", "/", "~/")) or (allow_paths and os.path.isfile(body))
    if looks_like_path:
        if not allow_paths:
            raise InvalidArgumentError(f"image terms are given by indexed image id here (id:N), not by path: {body!r}")
        path = os.path.expanduser(body)
        if not os.path.isfile(path):
            raise InvalidArgumentError(f"image term {body!r}: no such file")
        return QueryTerm(image=path, weight=weight)
    return QueryTerm(text=body, weight=weight)


def compose(query: str, add: list[str] | tuple[str, ...] = (), subtract: list[str] | tuple[str, ...] = (),
            allow_paths: bool = True) -> list[QueryTerm]:
    terms = [parse_term(query, 1.0, allow_paths)] + [parse_term(t, 1.0, allow_paths) for t in add] + \
            [parse_term(t, -1.0, allow_paths) for t in subtract]
    if len(terms) > MAX_TERMS:
        raise InvalidArgumentError(f"at most {MAX_TERMS} terms in one query, got {len(terms)}")
    return terms


def combine(terms: Sequence[QueryTerm], vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The composed query's unit vector: each term's unit vector times its weight, summed, normalised (rclip's
    arithmetic). Terms that cancel out leave nothing to search for: an error, not a random direction."""
    combined = np.sum([term.weight * np.asarray(vector, dtype=np.float32) for term, vector in zip(terms, vectors, strict=True)],
                      axis=0)
    norm = float(np.linalg.norm(combined))
    if norm < 1e-6:
        raise InvalidArgumentError("the terms cancel each other out: nothing is left to search for")
    return (combined / norm).astype(np.float32)
