"""Indexing: scan folders, decide what changed, and run the decode → encode → store pipeline.

Stages overlap: decode workers (threads: Pillow releases the GIL while decoding) read, fingerprint
and preprocess files ahead of the model with a bounded look-ahead, the calling thread encodes full
batches, and each batch is upserted as soon as it is encoded, so a run killed half way keeps what it
committed and the next run (ids derive from paths) finishes the rest without duplicates.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photoseek.encoders.encoder import CLIPEncoder
from photoseek.errors import ImageDecodeError
from photoseek.indexing.decode import decode_photo, is_raw, photo_metadata, read_file
from photoseek.indexing.scan import FailedFile, FileEntry, ScanResult, entries_for_paths, scan_directory
from photoseek.photo_metadata import PhotoMetadata
from photoseek.store.milvus import MilvusStore
from photoseek.store.records import PATH_MAX_BYTES, ImageRecord, IndexedFile, indexed_file, metadata_from_row, path_id

STAGES = ("read", "decode", "preprocess", "encode", "store")


@dataclass
class IndexSummary:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    moved: int = 0  # files renamed or moved inside the folder: their stored vector reused, nothing encoded
    descriptions_updated: int = 0
    metadata_read: int = 0  # rows indexed before metadata and hashes were kept, filled from their file (no re-encode)
    failed: list[FailedFile] = field(default_factory=list)
    seconds: float = 0.0
    # read/decode/preprocess are summed over worker threads; encode/store are wall time on the main thread
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, other: IndexSummary) -> None:
        """Fold another run's summary into this one (several folders in one command)."""
        self.indexed += other.indexed
        self.unchanged += other.unchanged
        self.removed += other.removed
        self.moved += other.moved
        self.descriptions_updated += other.descriptions_updated
        self.metadata_read += other.metadata_read
        self.failed.extend(other.failed)
        self.seconds += other.seconds
        for stage, seconds in other.stage_seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "moved": self.moved,
            "descriptions_updated": self.descriptions_updated,
            "metadata_read": self.metadata_read,
            "failed": [{"path": f.path, "reason": f.reason} for f in self.failed],
            "seconds": round(self.seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
        }


@dataclass(frozen=True)
class IndexProgress:
    """Reported after each file leaves the pipeline (and once when the plan is known)."""

    total: int  # files that need encoding in this run
    done: int  # of those, finished (encoded or failed)
    failed: int
    unchanged: int
    path: str | None = None


ProgressCallback = Callable[[IndexProgress], None]


class DescriptionMap:
    """Descriptions keyed by absolute path, path relative to a base folder, or file name (most specific wins)."""

    def __init__(self, descriptions: Mapping[str, Any] | None, base: str | Path):
        self._by_abs: dict[str, str] = {}
        self._by_name: dict[str, str] = {}
        base = os.path.abspath(os.fspath(base))
        for key, value in (descriptions or {}).items():
            text = _description_text(value)
            key = os.fspath(key)
            if os.path.isabs(key):
                self._by_abs[os.path.normpath(key)] = text
            else:
                self._by_abs.setdefault(os.path.normpath(os.path.join(base, key)), text)
                if os.sep not in key and "/" not in key:
                    self._by_name[key] = text

    def __bool__(self) -> bool:
        return bool(self._by_abs)

    def get(self, path: str) -> str | None:
        found = self._by_abs.get(os.path.normpath(path))
        return found if found is not None else self._by_name.get(os.path.basename(path))


def _description_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):  # e.g. {"en": ..., "zh": ...}
        return " / ".join(str(v) for v in value.values() if v)
    return str(value)


def fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class _Prepared:
    entry: FileEntry
    item: Any
    fingerprint: str
    metadata: PhotoMetadata
    seconds: tuple[float, float, float]  # read, decode, preprocess


@dataclass
class _Moved:
    """A new path whose content (size and fingerprint) is that of a row whose file is gone."""

    entry: FileEntry
    source: IndexedFile
    fingerprint: str


MovedFrom = Mapping[tuple[int, str], IndexedFile]  # (size, fingerprint) -> the row of a file that is gone


@dataclass
class IndexPlan:
    """What one run will do with each file found: encode it, only update its description, or skip it."""

    to_encode: list[FileEntry] = field(default_factory=list)
    relabel: list[tuple[IndexedFile, str]] = field(default_factory=list)  # unchanged files with a new description
    # unchanged files indexed before metadata was kept: read again at 1/8 scale, row rewritten with its vector
    read_metadata: list[tuple[IndexedFile, str]] = field(default_factory=list)
    unchanged: int = 0
    failed: list[FailedFile] = field(default_factory=list)  # the scan's failures and unusable paths


def plan_work(scan: ScanResult, existing: Mapping[str, IndexedFile], descriptions: DescriptionMap) -> IndexPlan:
    """Compare what the scan found with what the store holds: a file is unchanged when both its size
    and its mtime match the stored row (as rclip decides); anything else is encoded again."""
    plan = IndexPlan(failed=list(scan.failed))
    for entry in scan.files:
        if len(entry.path.encode("utf-8", "surrogateescape")) > PATH_MAX_BYTES:
            plan.failed.append(FailedFile(entry.path, f"path longer than {PATH_MAX_BYTES} bytes"))
            continue
        try:
            entry.path.encode("utf-8")
        except UnicodeEncodeError:
            plan.failed.append(FailedFile(entry.path, "file name is not valid UTF-8"))
            continue
        known = existing.get(entry.path)
        if known is not None and known.size == entry.size and abs(known.mtime - entry.mtime) < 1e-6:
            plan.unchanged += 1
            wanted = descriptions.get(entry.path)
            if known.needs_metadata:
                plan.read_metadata.append((known, known.description if wanted is None else wanted))
            elif wanted is not None and wanted != known.description:
                plan.relabel.append((known, wanted))
        else:
            plan.to_encode.append(entry)
    return plan


def gone_files(scan: ScanResult, existing: Mapping[str, IndexedFile]) -> list[IndexedFile]:
    """Rows whose file the scan did not find; rows under a folder it could not list are kept (we cannot tell)."""
    protected = tuple(d.rstrip(os.sep) + os.sep for d in scan.unlisted_dirs)
    on_disk = {f.path for f in scan.files} | {f.path for f in scan.failed}
    return [f for path, f in existing.items() if path not in on_disk and not path.startswith(protected)]


class _BatchWriter:
    """Collects decoded files into batches, has them encoded and upserts each batch as it comes back;
    owns the run's summary counts and stage timers.

    A remote encoder gets several batches at once (`batches_in_flight`), so that its accelerator does
    not idle through each round trip; results are stored in order, by the calling thread.
    """

    def __init__(self, encoder: CLIPEncoder, store: MilvusStore, summary: IndexSummary,
                 existing: Mapping[str, IndexedFile], descriptions: DescriptionMap):
        self.encoder, self.store, self.summary = encoder, store, summary
        self._existing, self._descriptions = existing, descriptions
        self._batch: list[_Prepared] = []
        self._moved: list[_Moved] = []
        self.reused: set[int] = set()  # ids of gone rows whose vectors now serve a moved file
        self._in_flight = encoder.batches_in_flight
        self._waiting: deque[tuple[list[_Prepared], Future[np.ndarray]]] = deque()
        self._pool = ThreadPoolExecutor(self._in_flight, thread_name_prefix="encode")

    def __enter__(self) -> _BatchWriter:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_exc: object) -> None:
        try:
            if error_type is None:
                self._flush()
                self._store_moved()
                while self._waiting:
                    self._store_next()
        finally:
            for _, future in self._waiting:  # after a failure: what has not started need not start
                future.cancel()
            self._pool.shutdown(wait=True)

    def add(self, outcome: _Prepared | _Moved | FailedFile) -> None:
        if isinstance(outcome, FailedFile):
            self.summary.failed.append(outcome)
            return
        if isinstance(outcome, _Moved):
            self._moved.append(outcome)
            if len(self._moved) >= 500:
                self._store_moved()
            return
        for stage, seconds in zip(STAGES, outcome.seconds, strict=False):
            self.summary.stage_seconds[stage] += seconds
        self._batch.append(outcome)
        if len(self._batch) >= self.encoder.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch = self._batch
        self._batch = []
        if self._in_flight == 1:
            self._store(batch, self._encode(batch))
            return
        self._waiting.append((batch, self._pool.submit(self._encode, batch)))
        while len(self._waiting) >= self._in_flight:
            self._store_next()

    def _store_next(self) -> None:
        batch, future = self._waiting.popleft()
        self._store(batch, future.result())

    def _encode(self, batch: list[_Prepared]) -> np.ndarray:
        started = time.perf_counter()
        vectors = self.encoder.encode_prepared([p.item for p in batch])
        self.summary.stage_seconds["encode"] += time.perf_counter() - started
        return vectors

    def _store_moved(self) -> None:
        """Rows for moved files, with the vectors stored for their content under its old path."""
        moved, self._moved = self._moved, []
        if not moved:
            return
        started = time.perf_counter()
        stored = {int(row["id"]): row for row in self.store.get(sorted({m.source.id for m in moved}), with_vectors=True)}
        records = []
        for m in moved:
            row = stored.get(m.source.id)
            if row is None:  # its old row went in the meantime (another process): nothing to reuse
                self.summary.failed.append(FailedFile(m.entry.path, f"moved from {m.source.path}, whose row is gone; index again to encode it"))
                continue
            description = self._descriptions.get(m.entry.path) or m.source.description
            records.append(ImageRecord(m.entry.path, np.asarray(row["vector"], dtype=np.float32), m.entry.size, m.entry.mtime,
                                       m.fingerprint, description, metadata_from_row(row)))
            self.reused.add(m.source.id)
        self.store.upsert(records)
        self.summary.moved += len(records)
        self.summary.stage_seconds["store"] += time.perf_counter() - started

    def _store(self, batch: list[_Prepared], vectors: np.ndarray) -> None:
        started = time.perf_counter()
        records = []
        for prepared, vector in zip(batch, vectors, strict=True):
            if not np.isfinite(vector).all():  # an encoder server refused this one image
                self.summary.failed.append(FailedFile(prepared.entry.path, "the encoder could not encode it"))
                continue
            path = prepared.entry.path
            description = self._descriptions.get(path) or self._existing.get(path, _NO_FILE).description
            records.append(ImageRecord(path, vector, prepared.entry.size, prepared.entry.mtime, prepared.fingerprint, description,
                                       prepared.metadata))
        self.store.upsert(records)
        self.summary.stage_seconds["store"] += time.perf_counter() - started
        self.summary.indexed += len(records)


class Indexer:
    """Brings a store up to date with files on disk, through an encoder."""

    def __init__(self, encoder: CLIPEncoder, store: MilvusStore, decode_workers: int | None = None,
                 lookahead_batches: int = 3):
        self.encoder = encoder
        self.store = store
        self.decode_workers = decode_workers or max(1, min(4, os.cpu_count() or 1))
        self.lookahead_batches = lookahead_batches

    def index_directory(self, root: str | Path, descriptions: Mapping[str, Any] | None = None,
                        progress: ProgressCallback | None = None, within: Sequence[str] = (),
                        exclude: Sequence[str] = (), relative_to: str | Path | None = None) -> IndexSummary:
        """Index `root` recursively; with `within`, read nothing whose real path lies outside those folders;
        `exclude`: glob patterns of names or relative paths to leave out (rows under them are removed);
        `relative_to`: the folder that `exclude` patterns and relative description keys start from, when
        `root` is a part of it (a watched folder's subfolder)."""
        root_path = os.path.abspath(os.fspath(root))
        base = os.path.abspath(os.fspath(relative_to)) if relative_to is not None else root_path
        scan = scan_directory(root_path, within=within, exclude=exclude, relative_to=base)
        existing = self.store.files_under(root_path)
        gone = gone_files(scan, existing)
        # a gone file's content found under a new path is a rename or move: its vector is reused (as rclip does)
        moved_from = {(f.size, f.fingerprint): f for f in gone if f.fingerprint}
        reused: set[int] = set()
        summary = self._run(scan, existing, DescriptionMap(descriptions, base), progress, moved_from, reused)
        summary.removed = self.store.delete(f.id for f in gone) - len(reused)
        return self._finish(summary)

    def index_files(self, paths: Iterable[str | os.PathLike[str]], descriptions: Mapping[str, Any] | None = None,
                    progress: ProgressCallback | None = None) -> IndexSummary:
        scan = entries_for_paths(paths)
        existing = {row["path"]: indexed_file(row) for row in self.store.get([path_id(f.path) for f in scan.files])}
        return self._finish(self._run(scan, existing, DescriptionMap(descriptions, os.getcwd()), progress))

    def _finish(self, summary: IndexSummary) -> IndexSummary:
        self.store.flush()
        return summary

    def _run(self, scan: ScanResult, existing: Mapping[str, IndexedFile], descriptions: DescriptionMap,
             progress: ProgressCallback | None, moved_from: MovedFrom | None = None, reused: set[int] | None = None) -> IndexSummary:
        started = time.perf_counter()
        plan = plan_work(scan, existing, descriptions)
        summary = IndexSummary(unchanged=plan.unchanged, failed=list(plan.failed))
        report = progress or (lambda _: None)
        report(IndexProgress(len(plan.to_encode), 0, 0, summary.unchanged))
        failed_before, done = len(summary.failed), 0
        with _BatchWriter(self.encoder, self.store, summary, existing, descriptions) as writer:
            for outcome in self._decoded(plan.to_encode, moved_from or {}):
                writer.add(outcome)
                done += 1
                path = outcome.path if isinstance(outcome, FailedFile) else outcome.entry.path
                report(IndexProgress(len(plan.to_encode), done, len(summary.failed) - failed_before, summary.unchanged, path))
        if reused is not None:
            reused |= writer.reused
        summary.descriptions_updated = self._rewrite(plan.relabel, read_headers=False)
        summary.metadata_read = self._rewrite(plan.read_metadata, read_headers=True)
        summary.seconds = time.perf_counter() - started
        return summary

    def _decoded(self, entries: list[FileEntry], moved_from: MovedFrom) -> Iterator[_Prepared | _Moved | FailedFile]:
        """Decode and preprocess in worker threads, yielding in order, at most a few batches ahead."""
        # Drafting to the model size itself kept embedding cosine >= 0.9999 with full decoding on 12 MP photos.
        min_side = self.encoder.image_size
        limit = max(self.decode_workers, self.encoder.batch_size * self.lookahead_batches)

        def work(entry: FileEntry) -> _Prepared | _Moved | FailedFile:
            try:
                t0 = time.perf_counter()
                data = read_file(Path(entry.path))
                content = fingerprint(data)
                source = moved_from.get((len(data), content)) if moved_from else None
                if source is not None:
                    return _Moved(entry, source, content)
                t1 = time.perf_counter()
                image, metadata = decode_photo(data, min_side=min_side, raw=is_raw(entry.path))
                t2 = time.perf_counter()
                item = self.encoder.prepare_image(image)
                return _Prepared(entry, item, content, metadata, (t1 - t0, t2 - t1, time.perf_counter() - t2))
            except ImageDecodeError as error:
                return FailedFile(entry.path, error.reason)
            except Exception as error:  # a bad file must never stop the run
                return FailedFile(entry.path, f"cannot process: {error.__class__.__name__}: {error}")

        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[_Prepared | _Moved | FailedFile]] = deque()
            queue = iter(entries)
            for entry in queue:
                pending.append(pool.submit(work, entry))
                if len(pending) >= limit:
                    break
            while pending:
                outcome = pending.popleft().result()
                next_entry = next(queue, None)
                if next_entry is not None:
                    pending.append(pool.submit(work, next_entry))
                yield outcome

    def _rewrite(self, files: list[tuple[IndexedFile, str]], read_headers: bool) -> int:
        """Rewrite unchanged files' rows with their stored vectors: a new description, and with `read_headers`
        the metadata and hashes read from the file at 1/8 scale (one that cannot be read is recorded as saying nothing)."""
        updated = 0
        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="header") as pool:
            for start in range(0, len(files), 500):
                chunk = dict((f.id, text) for f, text in files[start : start + 500])
                rows = self.store.get(list(chunk), with_vectors=True)
                metadata = list(pool.map(_metadata_or_nothing, [r["path"] for r in rows])) if read_headers \
                    else [metadata_from_row(r) for r in rows]
                records = [ImageRecord(r["path"], r["vector"], int(r["size"]), float(r["mtime"]), r.get("fingerprint", ""),
                                       chunk[int(r["id"])], m) for r, m in zip(rows, metadata, strict=True)]
                self.store.upsert(records)
                updated += len(records)
        return updated


def _metadata_or_nothing(path: str) -> PhotoMetadata:
    try:
        return photo_metadata(Path(path))
    except ImageDecodeError:
        return PhotoMetadata()


_NO_FILE = IndexedFile(0, "", 0, 0.0, "", "")
