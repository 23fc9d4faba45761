"""Groups of copies of one picture (resized or re-encoded copies, mirrored or slightly cropped or shifted ones),
found from what the index holds and confirmed pixel by pixel.

Each photo's nearest neighbours come from the store's own search over the stored CLIP vectors (batched
self-search); a neighbour at least `similarity` close whose perceptual hash (kept at index time, the mirror
image's too) is within `max_hash_distance` of 64 bits is a candidate. Vectors and hashes say two pictures look
alike; so do two screenshots of one app, two pages of one report, a shape and the same shape moved. So each
candidate pair is then decoded and compared (photoseek/indexing/same_picture.py): registered for scale, shift
and mirroring, and checked for any region that differs. Only confirmed pairs are grouped, so every group is safe
to delete from but its best copy; a pair whose files cannot be read as indexed is left out and counted.
Groups are the connected pairs, best copy first: most pixels, then the oldest, then the shortest path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from photoseek.indexing.perceptual import hash_distance
from photoseek.indexing.same_picture import WORKING_SIDE, compare
from photoseek.store.filters import SearchFilter
from photoseek.store.milvus import MilvusStore
from photoseek.store.records import Hit, metadata_from_row

DEFAULT_SIMILARITY = 0.75
# candidates only (the pixels decide): measured on bench/duplicates.py's copies, 5 % crops and 3 % shifts up to 18 bits
DEFAULT_MAX_HASH_DISTANCE = 20
NEIGHBOURS = 64  # looked at per photo
CHECKED_PER_PHOTO = 12  # of those, the nearest by hash are checked; larger groups still join through their members
QUERIES_PER_SEARCH = 256
PICTURES_KEPT = 256  # decoded pictures held while pairs are compared

PictureLoader = Callable[[dict[str, Any]], Image.Image]  # a row's picture as indexed; raises if it cannot be read
VERDICTS_KEPT = 100_000


class PixelVerdicts:
    """Pixel checks already made, by the two files' content fingerprints and the way round looked for: a page or a
    server asked for the groups again compares nothing twice. The pictures are still read (a file changed since
    it was indexed is left out as before); only the comparison is skipped. Bounded, oldest dropped first."""

    def __init__(self, kept: int = VERDICTS_KEPT):
        self._kept = kept
        self._verdicts: dict[tuple[str, str, bool | None], bool] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, bool | None]) -> bool | None:
        with self._lock:
            return self._verdicts.get(key)

    def put(self, key: tuple[str, str, bool | None], verdict: bool) -> None:
        with self._lock:
            if len(self._verdicts) >= self._kept:
                self._verdicts.pop(next(iter(self._verdicts)))
            self._verdicts[key] = verdict


@dataclass
class DuplicateReport:
    groups: list[list[Hit]] = field(default_factory=list)  # best copy first; Hit.score: cosine to the best copy
    photos_compared: int = 0
    without_hash: int = 0  # rows indexed before hashes were kept: index once more to compare them
    pairs_checked: int = 0  # candidate pairs compared pixel by pixel
    unreadable: int = 0  # candidate pairs left out: a file gone, changed since indexing, or unreadable


def find_duplicates(store: MilvusStore, similarity: float = DEFAULT_SIMILARITY,
                    max_hash_distance: int = DEFAULT_MAX_HASH_DISTANCE, search_filter: SearchFilter | None = None,
                    progress: Callable[[int], None] | None = None, load: PictureLoader | None = None,
                    verdicts: PixelVerdicts | None = None) -> DuplicateReport:
    """`load`: reads a row's picture for the pixel check (None: candidates are grouped unchecked, as a tool that
    looks at hashes alone would; only for callers that check pairs themselves). `verdicts`: checks kept from
    earlier calls (and this one's added to them)."""
    report = DuplicateReport()
    rows: dict[int, dict[str, Any]] = {}  # every compared row's fields, without its vector (1M rows would not fit)
    candidates: dict[tuple[int, int], bool | None] = {}  # (smaller id, larger id) -> mirrored? (None: either)
    for page in store.iter_rows_with_vectors(search_filter):
        for start in range(0, len(page), QUERIES_PER_SEARCH):
            chunk = [r for r in page[start : start + QUERIES_PER_SEARCH] if _hashes(r) is not None]
            report.without_hash += min(QUERIES_PER_SEARCH, len(page) - start) - len(chunk)
            report.photos_compared += len(chunk)
            if not chunk:
                continue
            vectors = np.asarray([r["vector"] for r in chunk], dtype=np.float32)
            for row, found in zip(chunk, store.search(vectors, NEIGHBOURS, search_filter), strict=True):
                mine_id = int(row["id"])
                rows[mine_id] = {k: v for k, v in row.items() if k != "vector"}
                mine = _hashes(row)
                assert mine is not None
                close = []
                for hit in found:
                    theirs = _hashes(hit.fields)
                    if hit.id == mine_id or hit.score < similarity or theirs is None:
                        continue
                    distance = hash_distance(mine[0], mine[1], theirs[0])
                    if distance <= max_hash_distance:
                        close.append((distance, hit.id, _mirrored(mine, theirs[0])))
                # the nearest by hash: many look-alikes (pages of one report) are as close as copies to a CLIP model
                for _, other, mirrored in sorted(close)[:CHECKED_PER_PHOTO]:
                    candidates[(min(mine_id, other), max(mine_id, other))] = mirrored
            if progress is not None:
                progress(report.photos_compared)
    pairs = sorted(pair for pair in candidates if pair[0] in rows and pair[1] in rows)
    checker = _PixelCheck(rows, load, candidates, verdicts or PixelVerdicts()) if load is not None else None
    confirmed = checker.confirmed(pairs) if checker is not None else set(pairs)
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for first, second in confirmed:
        parent[root(second)] = root(first)
    members: dict[int, list[int]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    grouped = []
    for ids in members.values():
        # every photo of a group is a confirmed copy of the one kept, not only of some other member: a thumbnail
        # matches both a circle and a hexagon at its few pixels, and must not join them through itself
        remaining = sorted(ids, key=lambda i: _quality(rows[i]))
        while len(remaining) > 1:
            best, others = remaining[0], remaining[1:]
            copies = [i for i in others if (min(best, i), max(best, i)) in confirmed or (checker is not None and checker.same(best, i))]
            if copies:
                grouped.append([best, *copies])
            remaining = [i for i in others if i not in copies]
    if checker is not None:
        report.pairs_checked, report.unreadable = checker.checked, checker.unreadable
    # the vectors of the photos in groups only, for each one's similarity to its group's best copy
    kept = {int(r["id"]): r["vector"] for r in store.get([i for ids in grouped for i in ids], with_vectors=True)}
    for ids in grouped:
        report.groups.append(_ranked([rows[i] for i in ids if i in kept], kept))
    report.groups = [group for group in report.groups if len(group) > 1]
    report.groups.sort(key=lambda group: (-len(group), group[0].fields["path"]))
    return report


class _PixelCheck:
    """Compares candidate pairs pixel by pixel, each picture decoded once while its pairs are compared (a bounded
    cache); two threads, as decoding and FFTs release the GIL."""

    def __init__(self, rows: dict[int, dict[str, Any]], load: PictureLoader, mirrored: dict[tuple[int, int], bool | None],
                 verdicts: PixelVerdicts):
        self.rows, self.load, self.mirrored, self.verdicts = rows, load, mirrored, verdicts
        self.pictures: dict[int, Image.Image | None] = {}
        self.lock = threading.Lock()
        self.checked = self.unreadable = 0

    def confirmed(self, pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
        with ThreadPoolExecutor(2) as pool:
            verdicts = list(pool.map(lambda pair: self.same(*pair), pairs))
        return {pair for pair, verdict in zip(pairs, verdicts, strict=True) if verdict}

    def same(self, first: int, second: int) -> bool:
        a, b = self.picture(first), self.picture(second)
        with self.lock:
            if a is None or b is None:
                self.unreadable += 1
                return False
            self.checked += 1
        way = self.mirrored.get((min(first, second), max(first, second)))
        key = self._key(first, second, way)
        known = self.verdicts.get(key) if key is not None else None
        if known is not None:
            return known
        # both ways: laid over each other from either side, a copy matches; two scenes that differ only in where a
        # shape sits and in their grain can pass from one side (measured: mean differences 2.8 and 3.5)
        verdict = compare(a, b, way).same and compare(b, a, way).same
        if key is not None:
            self.verdicts.put(key, verdict)
        return verdict

    def _key(self, first: int, second: int, way: bool | None) -> tuple[str, str, bool | None] | None:
        prints = sorted(str(self.rows[i].get("fingerprint") or "") for i in (first, second))
        return (prints[0], prints[1], way) if all(prints) else None

    def picture(self, image_id: int) -> Image.Image | None:
        with self.lock:
            if image_id in self.pictures:
                return self.pictures[image_id]
        try:
            image: Image.Image | None = self.load(self.rows[image_id])
            assert image is not None
            image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
        except Exception:  # gone, changed since indexing, unreadable: not confirmed, counted
            image = None
        with self.lock:
            if len(self.pictures) >= PICTURES_KEPT:
                self.pictures.pop(next(iter(self.pictures)))
            self.pictures[image_id] = image
        return image


def _hashes(row: dict[str, Any]) -> tuple[int, int] | None:
    metadata = metadata_from_row(row)
    if metadata is None or metadata.phash is None or metadata.phash_mirror is None:
        return None
    return metadata.phash, metadata.phash_mirror


def indexed_picture(within: Sequence[str] = ()) -> PictureLoader:
    """A loader of a row's picture from its file as indexed: the same size, time and content fingerprint, opened
    without following symbolic links (photoseek/indexing/files.py), under `within` when given."""
    from photoseek.indexing.decode import is_raw, load_rgb
    from photoseek.indexing.files import read_indexed_file

    roots = [os.path.realpath(r) for r in within]

    def load(row: dict[str, Any]) -> Image.Image:
        return load_rgb(read_indexed_file(row, roots), min_side=WORKING_SIDE, raw=is_raw(str(row["path"])))

    return load


def _mirrored(mine: tuple[int, int], theirs: int) -> bool | None:
    """Whether the other photo matched this one's mirror image rather than the photo itself; None when the hashes
    cannot tell (a picture nearly the same both ways round)."""
    direct, mirror = _bits(mine[0] ^ theirs), _bits(mine[1] ^ theirs)
    return None if abs(direct - mirror) <= 4 else mirror < direct


def _bits(value: int) -> int:
    return bin(value & ((1 << 64) - 1)).count("1")


def _quality(row: dict[str, Any]) -> tuple[int, float, int, str]:
    """The best copy sorts first: the most pixels, then the oldest (taken, else modified), then the shortest path."""
    metadata = metadata_from_row(row)
    pixels = (metadata.width or 0) * (metadata.height or 0) if metadata else 0
    when = metadata.taken if metadata and metadata.taken is not None else float(row["mtime"])
    return -pixels, when, len(row["path"]), row["path"]


def _ranked(group: list[dict[str, Any]], vectors: dict[int, Any]) -> list[Hit]:
    ordered = sorted(group, key=_quality)
    best = np.asarray(vectors[int(ordered[0]["id"])], dtype=np.float32)
    return [Hit(int(r["id"]), float(np.dot(best, np.asarray(vectors[int(r["id"])], dtype=np.float32))), r) for r in ordered]
