"""What a row holds: the record written for a photo, the fields read back (metadata, bookkeeping, hits)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photoseek.photo_metadata import PhotoMetadata
from photoseek.store.words import indexed_text

METADATA_VERSION = 1  # meta_version of a row whose header has been read (0: not yet)


# Milvus 2.3 has no nullable fields: "unknown" is a value no photo has, and every filter excludes it.
UNKNOWN_TIME = -1.0e15


UNKNOWN_OFFSET = -32768


UNKNOWN_COORDINATE = -999.0


METADATA_TEXT_BYTES = 256


# Camera filters match whole words: every run of consecutive words of "make model" is stored, because
# Milvus 2.3 matches strings by prefix only (LIKE "%x%" is refused) while every version has array_contains.
CAMERA_PHRASES = 64


TEXT_MAX_BYTES = 16_384


PATH_MAX_BYTES = 4096


DESCRIPTION_MAX_BYTES = 8192


FINGERPRINT_LENGTH = 32


STATE_FIELDS = ["id", "path", "size", "mtime", "fingerprint", "description"]


RESULT_FIELDS = ["path", "description", "size", "mtime", "ext"]


METADATA_FIELDS = ["taken", "taken_offset", "camera", "camera_words", "lens", "latitude", "longitude", "width", "height",
                    "orientation", "phash", "phash_mirror", "meta_version"]


def path_id(path: str) -> int:
    """A stable 63-bit primary key for an absolute path."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


@dataclass
class ImageRecord:
    path: str
    vector: np.ndarray
    size: int
    mtime: float
    fingerprint: str
    description: str = ""
    metadata: PhotoMetadata | None = None  # None: the file's header has not been read

    @property
    def id(self) -> int:
        return path_id(self.path)

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "description": truncate_utf8(self.description, DESCRIPTION_MAX_BYTES),
            "size": int(self.size),
            "mtime": float(self.mtime),
            "fingerprint": self.fingerprint,
            "ext": Path(self.path).suffix.lower().lstrip(".")[:16],
            "vector": np.asarray(self.vector, dtype=np.float32).tolist(),
            **metadata_fields(self.metadata),
        }


def metadata_fields(metadata: PhotoMetadata | None) -> dict[str, Any]:
    """A row's metadata fields, unknowns as the sentinels every filter excludes."""
    m = metadata or PhotoMetadata()
    camera = truncate_utf8(m.camera or "", METADATA_TEXT_BYTES)
    return {
        "taken": UNKNOWN_TIME if m.taken is None else float(m.taken),
        "taken_offset": UNKNOWN_OFFSET if m.taken_offset_minutes is None else int(m.taken_offset_minutes),
        "camera": camera,
        "camera_words": camera_words(camera),
        "lens": truncate_utf8(m.lens or "", METADATA_TEXT_BYTES),
        "latitude": UNKNOWN_COORDINATE if m.latitude is None or m.longitude is None else float(m.latitude),
        "longitude": UNKNOWN_COORDINATE if m.latitude is None or m.longitude is None else float(m.longitude),
        "width": int(m.width or 0),
        "height": int(m.height or 0),
        "orientation": int(m.orientation or 0),
        "phash": int(m.phash or 0),
        "phash_mirror": int(m.phash_mirror or 0),
        "meta_version": 0 if metadata is None else METADATA_VERSION,
    }


def text_field(row: dict[str, Any]) -> dict[str, str]:
    """The words a row is found by (photoseek/store/words.py): its description, its file name and the names of
    the two folders above it."""
    return {"text": truncate_utf8(indexed_text(str(row["path"]), str(row.get("description", ""))), TEXT_MAX_BYTES)}


def camera_words(camera: str) -> list[str]:
    """The phrases a camera filter can name: each run of consecutive words of the lower-cased name."""
    words = camera.lower().split()
    phrases = [" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)]
    return [truncate_utf8(p, METADATA_TEXT_BYTES) for p in phrases[:CAMERA_PHRASES]]


def metadata_from_row(row: dict[str, Any]) -> PhotoMetadata | None:
    """The metadata a row holds; None for a row whose header was never read (or a version 1 collection)."""
    if not row.get("meta_version"):
        return None
    taken = float(row["taken"])
    latitude, longitude = float(row["latitude"]), float(row["longitude"])
    offset = int(row["taken_offset"])
    known_position = latitude != UNKNOWN_COORDINATE
    return PhotoMetadata(None if taken == UNKNOWN_TIME else taken, None if offset == UNKNOWN_OFFSET else offset,
                         row["camera"] or None, row["lens"] or None, latitude if known_position else None,
                         longitude if known_position else None, int(row["width"]) or None, int(row["height"]) or None,
                         int(row["orientation"]) or None, *_hashes(row))


def _hashes(row: dict[str, Any]) -> tuple[int | None, int | None]:
    """A row's perceptual hashes (a row with metadata has both fields); (0, 0) is how a row written without
    them reads (a flat grey picture too, which has no duplicates worth finding)."""
    phash, mirror = int(row["phash"]), int(row["phash_mirror"])
    return (None, None) if phash == 0 and mirror == 0 else (phash, mirror)


@dataclass(frozen=True)
class IndexedFile:
    """What the store knows of a file, enough to decide whether to re-encode it."""

    id: int
    path: str
    size: int
    mtime: float
    fingerprint: str
    description: str
    needs_metadata: bool = False  # indexed before its header was read: an index run reads it (no re-encode)


def indexed_file(row: dict[str, Any]) -> IndexedFile:
    """The bookkeeping part of a stored row (every schema has the fingerprint and description; a collection
    made before metadata has no meta_version, and is upgraded before an index run reads its rows)."""
    return IndexedFile(int(row["id"]), str(row["path"]), int(row["size"]), float(row["mtime"]), str(row["fingerprint"]),
                       str(row["description"]), row.get("meta_version", METADATA_VERSION) < METADATA_VERSION)


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    fields: dict[str, Any] = field(default_factory=dict)
