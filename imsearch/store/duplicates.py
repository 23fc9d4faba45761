"""Groups of near-identical photos (bursts, resized or re-encoded copies, light edits, mirrored or slightly
cropped copies), found from what the index holds: nothing is decoded or encoded again.

Each photo's nearest neighbours come from the store's own search over the stored CLIP vectors (batched
self-search); a neighbour at least `similarity` close is a candidate, and it is a duplicate when the
two perceptual hashes (kept at index time; the mirror image's too) differ in at most
`max_hash_distance` of 64 bits. The vectors find candidates fast at any size; the hash tells a copy
from a different photo of the same kind of scene, which a CLIP model can rank as close as a copy.
Groups are the connected pairs, best copy first: most pixels, then the oldest, then the shortest path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imsearch.indexing.perceptual import hash_distance
from milvus_store import Hit, MilvusStore, SearchFilter, metadata_from_row

DEFAULT_SIMILARITY = 0.75
DEFAULT_MAX_HASH_DISTANCE = 14  # measured: 5 % crops 2-14 bits, different photographs 20 or more
NEIGHBOURS = 16  # per photo; larger groups still join through their members' neighbours
QUERIES_PER_SEARCH = 256


@dataclass
class DuplicateReport:
    groups: list[list[Hit]] = field(default_factory=list)  # best copy first; Hit.score: cosine to the best copy
    photos_compared: int = 0
    without_hash: int = 0  # rows indexed before hashes were kept: index once more to compare them


def find_duplicates(store: MilvusStore, similarity: float = DEFAULT_SIMILARITY,
                    max_hash_distance: int = DEFAULT_MAX_HASH_DISTANCE, search_filter: SearchFilter | None = None,
                    progress: Callable[[int], None] | None = None) -> DuplicateReport:
    report = DuplicateReport()
    rows: dict[int, dict[str, Any]] = {}  # every compared row's fields, without its vector (1M rows would not fit)
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for page in store.iter_rows_with_vectors(search_filter):
        for start in range(0, len(page), QUERIES_PER_SEARCH):
            chunk = [r for r in page[start : start + QUERIES_PER_SEARCH] if _hashes(r) is not None]
            report.without_hash += min(QUERIES_PER_SEARCH, len(page) - start) - len(chunk)
            report.photos_compared += len(chunk)
            if not chunk:
                continue
            vectors = np.asarray([r["vector"] for r in chunk], dtype=np.float32)
            for row, found in zip(chunk, store.search(vectors, NEIGHBOURS, search_filter), strict=True):
                rows[int(row["id"])] = {k: v for k, v in row.items() if k != "vector"}
                mine = _hashes(row)
                assert mine is not None
                for hit in found:
                    theirs = _hashes(hit.fields)
                    if hit.id == int(row["id"]) or hit.score < similarity or theirs is None:
                        continue
                    if hash_distance(mine[0], mine[1], theirs[0]) <= max_hash_distance:
                        parent[root(hit.id)] = root(int(row["id"]))
            if progress is not None:
                progress(report.photos_compared)
    members: dict[int, list[int]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    grouped = [ids for ids in members.values() if len(ids) > 1 and all(i in rows for i in ids)]
    # the vectors of the photos in groups only, for each one's similarity to its group's best copy
    kept = {int(r["id"]): r["vector"] for r in store.get([i for ids in grouped for i in ids], with_vectors=True)}
    for ids in grouped:
        report.groups.append(_ranked([rows[i] for i in ids], kept))
    report.groups.sort(key=lambda group: (-len(group), group[0].fields["path"]))
    return report


def _hashes(row: dict[str, Any]) -> tuple[int, int] | None:
    metadata = metadata_from_row(row)
    if metadata is None or metadata.phash is None or metadata.phash_mirror is None:
        return None
    return metadata.phash, metadata.phash_mirror


def _ranked(group: list[dict[str, Any]], vectors: dict[int, Any]) -> list[Hit]:
    """Best copy first: the most pixels, then the oldest (taken, else modified), then the shortest path."""
    def quality(row: dict[str, Any]) -> tuple[int, float, int, str]:
        metadata = metadata_from_row(row)
        pixels = (metadata.width or 0) * (metadata.height or 0) if metadata else 0
        when = metadata.taken if metadata and metadata.taken is not None else float(row["mtime"])
        return -pixels, when, len(row["path"]), row["path"]

    ordered = sorted(group, key=quality)
    best = np.asarray(vectors[int(ordered[0]["id"])], dtype=np.float32)
    return [Hit(int(r["id"]), float(np.dot(best, np.asarray(vectors[int(r["id"])], dtype=np.float32))), r) for r in ordered]
