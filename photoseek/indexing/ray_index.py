"""Indexing on a Ray cluster: the same incremental index as `pipeline.py`, spread over Ray Data.

    photoseek --mode index --ray [ADDRESS] --image-dir DIR --milvus-uri http://HOST:19530
    photoseek --mode index --ray [ADDRESS] --manifest photos.parquet --milvus-uri ...

Four stages, each scaled on its own by Ray Data:
  plan    tasks: each lists one part of the folders (or one block of a manifest) and compares it with the
          rows the store holds for that part only: files to encode, rows whose file is gone, a count of
          unchanged files. No process walks the whole tree and none reads every row.
  decode  tasks: read, fingerprint and decode each file; a bad file becomes a `failed` row with the reason
          local mode gives, never a failed block.
  encode  an actor pool of CLIPEncoder (one GPU each where the cluster has GPUs; the same model names and
          precision policy as local mode: fp16 on CUDA).
  write   a Datasink: upserts batches of ~32 MB into a Milvus server or cluster, deletes the rows of gone
          files, and counts. Row ids derive from paths, so a retried task writes the same rows again, never twice.

Milvus Lite is refused: its .db file is open to one process only, and a cluster is many.
What local mode does and this does not: a moved file is encoded again under its new path (local mode reuses
its vector), and a second symbolic link to a folder already listed is listed again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photoseek.errors import ImageDecodeError, InvalidArgumentError
from photoseek.extras import require
from photoseek.indexing.decode import decode_photo, is_raw, photo_metadata, read_file
from photoseek.indexing.pipeline import DescriptionMap, IndexSummary, fingerprint, gone_files, plan_work
from photoseek.indexing.scan import FailedFile, FileEntry, ScanResult, entries_for_paths, scan_directory
from photoseek.photo_metadata import PhotoMetadata
from photoseek.store.lite import is_lite_uri
from photoseek.store.milvus import MilvusStore, StoreAddress
from photoseek.store.records import ImageRecord, IndexedFile, indexed_file, metadata_from_row, path_id

if TYPE_CHECKING:
    import pyarrow
    import pyarrow.fs

    from photoseek.encoders.encoder import CLIPEncoder

# Ray gives a new node's raylet a fixed 30 s to register with the GCS (ray/_private/node.py; no setting changes it).
# On a small machine with every core busy it sometimes misses that wait before anything has run; such a start
# is repeated once, and any other failure is raised as it is
RAY_START_TIMED_OUT = "The current node timed out during startup"
# Before that, the head waits 30 s by default for its GCS to publish its port. That wait has a setting: a local
# start is given GCS_PORT_WAIT_S unless the user set it. A busy 2-core CI machine still missed it once (2026-12-01,
# with 120 s), so a start that misses it is repeated once like the raylet's
RAY_PORT_FILE_TIMED_OUT = "Timed out waiting for file"
GCS_PORT_WAIT_SETTING = "RAY_gcs_server_port_wait_time_s"
GCS_PORT_WAIT_S = 120

# what each row in the pipeline stands for
ENCODE, GONE, UNCHANGED, RELABEL, FAILED = "encode", "gone", "unchanged", "relabel", "failed"
READ_METADATA = "read_metadata"  # an unchanged row indexed before metadata was kept
MAX_SPLIT_DEPTH = 4
DECODED_PHOTO_BYTES = 48 * 1024 * 1024  # a 12 MP photo as RGB is 36 MB (JPEGs decode at reduced scale, far less)
WRITE_BYTES = 32 * 1024 * 1024  # per upsert: Milvus takes up to 64 MB per request
MANIFEST_FORMATS = (".parquet", ".csv", ".jsonl", ".json")
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "abfss://")

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray. `address`: a cluster (`ray://host:10001`, `auto`); None joins $RAY_ADDRESS or starts
    a Ray on this machine. `encoders`: encoder actors (default: one per GPU, else one). `gpus_per_encoder`
    (default: 1 where the cluster has GPUs). `num_cpus`: for a Ray started here."""

    address: str | None = None
    encoders: int | None = None
    gpus_per_encoder: float | None = None
    num_cpus: int | None = None
    show_progress: bool = False


@dataclass(frozen=True)
class EncoderSpec:
    """What each encoder actor builds: CLIPEncoder(mode, model_name, batch_size, **options)."""

    mode: str
    model_name: str
    batch_size: int
    options: tuple[tuple[str, Any], ...] = ()

    def build(self) -> CLIPEncoder:
        from photoseek.encoders.encoder import CLIPEncoder

        return CLIPEncoder(mode=self.mode, model_name=self.model_name, batch_size=self.batch_size, **dict(self.options))


@dataclass
class _Rows:
    """Columns of plan rows, built up one row at a time."""

    kind: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    mtime: list[float] = field(default_factory=list)
    row_id: list[int] = field(default_factory=list)
    description: list[str] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)

    def add(self, kind: str, path: str = "", size: int = 0, mtime: float = 0.0, row_id: int = 0,
            description: str = "", reason: str = "") -> None:
        self.kind.append(kind)
        self.path.append(path)
        self.size.append(size)
        self.mtime.append(mtime)
        self.row_id.append(row_id)
        self.description.append(description)
        self.reason.append(reason)

    def add_plan(self, scan: ScanResult, existing: Mapping[str, IndexedFile], descriptions: DescriptionMap) -> None:
        """What local mode's plan_work decides for these files, as rows; rows of gone files to delete."""
        plan = plan_work(scan, existing, descriptions)
        for entry in plan.to_encode:
            known = existing.get(entry.path)
            self.add(ENCODE, entry.path, entry.size, entry.mtime,
                     description=descriptions.get(entry.path) or (known.description if known else ""))
        for known, text in plan.relabel:
            self.add(RELABEL, known.path, row_id=known.id, description=text)
        for known, text in plan.read_metadata:
            self.add(READ_METADATA, known.path, row_id=known.id, description=text)
        for failed in plan.failed:
            self.add(FAILED, failed.path, reason=failed.reason)
        self.add(UNCHANGED, size=plan.unchanged)
        for gone in gone_files(scan, existing):
            self.add(GONE, gone.path, row_id=gone.id)

    def columns(self) -> Batch:
        return {"kind": np.array(self.kind, dtype=object), "path": np.array(self.path, dtype=object),
                "size": np.array(self.size, dtype=np.int64), "mtime": np.array(self.mtime, dtype=np.float64),
                "row_id": np.array(self.row_id, dtype=np.int64), "description": np.array(self.description, dtype=object),
                "reason": np.array(self.reason, dtype=object)}


# ------------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class FolderPart:
    """One part of a folder tree for one plan task: a whole subtree, or one folder's own files
    (its subfolders, listed in `parts_below`, being parts of their own)."""

    folder: str
    recursive: bool
    parts_below: tuple[str, ...] = ()


def split_tree(root: str, target_parts: int, within: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[FolderPart]:
    """Cut the tree under `root` into about `target_parts` parts, breadth first, listing only the few
    folders near the top (never the whole tree)."""
    parts: list[FolderPart] = []
    frontier, depth = [root], 0
    while frontier:
        if len(parts) + len(frontier) >= target_parts or depth >= MAX_SPLIT_DEPTH:
            parts.extend(FolderPart(folder, True) for folder in frontier)
            break
        next_frontier = []
        for folder in frontier:
            listing = scan_directory(folder, within=within, exclude=exclude, recursive=False, relative_to=root)
            if listing.unlisted_dirs:
                parts.append(FolderPart(folder, True))  # its task reports what cannot be listed, as local mode does
                continue
            parts.append(FolderPart(folder, False, tuple(listing.subfolders)))
            next_frontier.extend(listing.subfolders)
        frontier, depth = next_frontier, depth + 1
    return parts


def plan_folder_parts(batch: Batch, address: StoreAddress, root: str, within: Sequence[str], exclude: Sequence[str],
                      descriptions: Mapping[str, str]) -> Batch:
    """Ray task: list each part and compare it with the store's rows for that part."""
    rows = _Rows()
    wanted = DescriptionMap(descriptions, root)
    store = address.open()
    try:
        for folder, recursive, below in zip(batch["folder"], batch["recursive"], batch["parts_below"], strict=True):
            below = tuple(str(b) for b in below) if below is not None else ()
            scan = scan_directory(str(folder), within=within, exclude=exclude, recursive=bool(recursive), relative_to=root)
            rows.add_plan(scan, store.files_under(str(folder), except_under=below), wanted)
    finally:
        store.close()
    return rows.columns()


def manifest_path(raw: str, base: str) -> str:
    """A manifest's entry as the path the index stores: local paths absolute (relative ones against the
    manifest's folder, file:// URIs as plain paths, as local mode stores them), remote URIs as given."""
    if raw.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return os.path.normpath(unquote(urlsplit(raw).path))
    if "://" in raw:
        return raw
    return os.path.normpath(os.path.join(base, os.path.expanduser(raw)))


class _RemoteFiles:
    """Object-storage URIs through pyarrow's filesystems, one per bucket (credentials from the environment)."""

    def __init__(self) -> None:
        self._systems: dict[str, tuple[pyarrow.fs.FileSystem, int]] = {}

    def _resolve(self, uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
        """The bucket's filesystem (made once: it resolves credentials) and the object's path in it."""
        import pyarrow.fs

        scheme, _, rest = uri.partition("://")
        key = scheme + "://" + rest.split("/", 1)[0]
        if key not in self._systems:
            system, path = pyarrow.fs.FileSystem.from_uri(uri)
            if not uri.endswith(path):  # a scheme whose paths are not the URI's tail: resolve each one
                return system, path
            self._systems[key] = system, len(uri) - len(path)  # within one bucket the path starts at the same place
        system, start = self._systems[key]
        return system, uri[start:]

    def stat(self, uri: str) -> FileEntry | FailedFile:
        import pyarrow.fs

        try:
            system, path = self._resolve(uri)
            info = system.get_file_info(path)
        except Exception as error:  # bad URI, no credentials, unreachable: this file fails, the run goes on
            return FailedFile(uri, f"cannot stat: {error}")
        if info.type == pyarrow.fs.FileType.NotFound:
            return FailedFile(uri, "file not found")
        if info.type != pyarrow.fs.FileType.File:
            return FailedFile(uri, "not a regular file")
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        return FileEntry(uri, int(info.size or 0), mtime)

    def read(self, uri: str) -> bytes:
        try:
            system, path = self._resolve(uri)
            with system.open_input_stream(path) as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            raise ImageDecodeError("file not found") from None
        except Exception as error:
            raise ImageDecodeError(f"cannot read file: {error}") from None


def plan_manifest_block(batch: Batch, address: StoreAddress, base: str) -> Batch:
    """Ray task: stat each listed file and compare it with its row. A listed file that is gone loses its
    row; files the manifest does not list are left alone (a manifest may be one part of a library)."""
    paths = [manifest_path(str(p), base) for p in batch["path"]]
    given = batch.get("description")
    descriptions = {p: str(d) for p, d in zip(paths, given, strict=True) if d} if given is not None else {}
    listed = list(dict.fromkeys(paths))
    scan = entries_for_paths(p for p in listed if not p.startswith(REMOTE_SCHEMES))  # what local mode says of them
    remote = _RemoteFiles()
    for uri in (p for p in listed if p.startswith(REMOTE_SCHEMES)):
        found = remote.stat(uri)
        if isinstance(found, FileEntry):
            scan.files.append(found)
        else:
            scan.failed.append(found)
    store = address.open()
    try:
        known = store.get([path_id(p) for p in listed])
    finally:
        store.close()
    existing = {str(r["path"]): indexed_file(r) for r in known}
    missing = {f.path for f in scan.failed if f.reason == "file not found" and f.path in existing}
    scan.failed = [f for f in scan.failed if f.path not in missing]  # a listed file that is gone: its row goes
    rows = _Rows()
    rows.add_plan(scan, {p: f for p, f in existing.items() if p not in missing}, DescriptionMap(descriptions, base))
    for path in missing:
        rows.add(GONE, path, row_id=existing[path].id)
    return rows.columns()


# ------------------------------------------------------------------------------------------- decode and encode

def decode_files(batch: Batch, min_side: int) -> Batch:
    """Ray task: read, fingerprint and decode the files to encode; a bad file becomes a `failed` row."""
    count = len(batch["kind"])
    kinds, reasons = batch["kind"].copy(), batch["reason"].copy()
    fingerprints = np.array([""] * count, dtype=object)
    pixels = np.array([b""] * count, dtype=object)
    metadata = np.array(["{}"] * count, dtype=object)  # JSON: Arrow columns of optional fields cost more than they save
    widths, heights = np.zeros(count, dtype=np.int32), np.zeros(count, dtype=np.int32)
    remote = _RemoteFiles()
    for i in range(count):
        if kinds[i] != ENCODE:
            continue
        path = str(batch["path"][i])
        try:
            data = remote.read(path) if path.startswith(REMOTE_SCHEMES) else read_file(Path(path))
            fingerprints[i] = fingerprint(data)
            image, photo = decode_photo(data, min_side=min_side, raw=is_raw(path))
            metadata[i] = json.dumps(photo.to_dict())
            widths[i], heights[i] = image.size
            pixels[i] = image.tobytes()
        except ImageDecodeError as error:
            kinds[i], reasons[i] = FAILED, error.reason
        except Exception as error:  # a bad file must never fail the block
            kinds[i], reasons[i] = FAILED, f"cannot process: {error.__class__.__name__}: {error}"
    return {**batch, "kind": kinds, "reason": reasons, "fingerprint": fingerprints, "pixels": pixels,
            "width": widths, "height": heights, "metadata": metadata}


class EncodeImages:
    """Ray actor: one encoder, loaded once, for every batch this actor is given."""

    def __init__(self, spec: EncoderSpec):
        self.encoder = spec.build()

    def __call__(self, batch: Batch) -> Batch:
        from PIL import Image

        kinds, reasons = batch["kind"].copy(), batch["reason"].copy()
        vectors = np.zeros((len(kinds), self.encoder.dim), dtype=np.float32)
        chosen = [i for i, kind in enumerate(kinds) if kind == ENCODE]
        if chosen:
            images = [Image.frombytes("RGB", (int(batch["width"][i]), int(batch["height"][i])), batch["pixels"][i])
                      for i in chosen]
            encoded = self.encoder.encode_prepared([self.encoder.prepare_image(image) for image in images])
            for i, vector in zip(chosen, encoded, strict=True):
                if np.isfinite(vector).all():
                    vectors[i] = vector
                else:  # an encoder server refused this one image
                    kinds[i], reasons[i] = FAILED, "the encoder could not encode it"
        rest = {k: v for k, v in batch.items() if k not in ("pixels", "width", "height")}
        return {**rest, "kind": kinds, "reason": reasons, "vector": vectors}


def describe_model(spec: EncoderSpec) -> tuple[int, dict[str, Any], int]:
    """Ray task: the model's dimension, build record and input size (the driver loads no model)."""
    encoder = spec.build()
    try:
        return encoder.dim, encoder.build, encoder.image_size
    finally:
        encoder.close()


# ------------------------------------------------------------------------------------------- write

def write_rows(store: MilvusStore, batches: Iterable[Batch]) -> dict[str, Any]:
    """Apply pipeline rows to the store: upsert encoded files (~32 MB per request), delete gone rows, rewrite
    relabelled rows; count what was done."""
    done: dict[str, Any] = {"indexed": 0, "unchanged": 0, "removed": 0, "descriptions_updated": 0, "metadata_read": 0, "failed": []}
    pending: list[ImageRecord] = []
    pending_bytes = 0
    for batch in batches:
        gone, relabel, read_headers = [], {}, set()
        for i, kind in enumerate(batch["kind"]):
            if kind == ENCODE:
                vector = np.asarray(batch["vector"][i], dtype=np.float32)
                path = str(batch["path"][i])
                pending.append(ImageRecord(path, vector, int(batch["size"][i]), float(batch["mtime"][i]),
                                           str(batch["fingerprint"][i]), str(batch["description"][i]),
                                           PhotoMetadata(**json.loads(str(batch["metadata"][i])))))
                pending_bytes += vector.nbytes * 3 + len(path) + 200  # as JSON-ish floats on the wire
                if pending_bytes >= WRITE_BYTES:
                    store.upsert(pending)
                    done["indexed"] += len(pending)
                    pending, pending_bytes = [], 0
            elif kind == GONE:
                gone.append(int(batch["row_id"][i]))
            elif kind in (RELABEL, READ_METADATA):
                relabel[int(batch["row_id"][i])] = str(batch["description"][i])
                read_headers.update([int(batch["row_id"][i])] if kind == READ_METADATA else [])
            elif kind == UNCHANGED:
                done["unchanged"] += int(batch["size"][i])
            elif kind == FAILED:
                done["failed"].append((str(batch["path"][i]), str(batch["reason"][i])))
        done["removed"] += store.delete(gone)
        if relabel:
            rows = store.get(list(relabel), with_vectors=True)
            store.upsert([ImageRecord(r["path"], r["vector"], int(r["size"]), float(r["mtime"]), r.get("fingerprint", ""),
                                      relabel[int(r["id"])],
                                      _header(r["path"]) if int(r["id"]) in read_headers else metadata_from_row(r)) for r in rows])
            done["metadata_read"] += sum(1 for r in rows if int(r["id"]) in read_headers)
            done["descriptions_updated"] += sum(1 for r in rows if int(r["id"]) not in read_headers)
    store.upsert(pending)
    done["indexed"] += len(pending)
    return done


def _header(path: str) -> PhotoMetadata:
    """A local file's header; a remote object's (or an unreadable one) is recorded as saying nothing."""
    if path.startswith(REMOTE_SCHEMES):
        return PhotoMetadata()
    try:
        return photo_metadata(Path(path))
    except ImageDecodeError:
        return PhotoMetadata()


def _milvus_sink(address: StoreAddress) -> Any:
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class MilvusDatasink(Datasink[dict[str, Any]]):
        """Write tasks open their own connection to the Milvus server and apply their rows."""

        def __init__(self) -> None:
            self.summary = IndexSummary()

        @property
        def min_bytes_per_write(self) -> int:
            return WRITE_BYTES

        def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
            store = address.open()
            try:
                return write_rows(store, (BlockAccessor.for_block(b).to_batch_format("numpy") for b in blocks))
            finally:
                store.close()

        def on_write_complete(self, write_result: Any) -> None:
            for done in write_result.write_returns:
                self.summary.indexed += done["indexed"]
                self.summary.unchanged += done["unchanged"]
                self.summary.removed += done["removed"]
                self.summary.descriptions_updated += done["descriptions_updated"]
                self.summary.metadata_read += done["metadata_read"]
                self.summary.failed.extend(FailedFile(p, r) for p, r in done["failed"])

    return MilvusDatasink()


# ------------------------------------------------------------------------------------------- driver

def start_ray(**init_options: Any) -> None:
    """`ray.init` with GCS_PORT_WAIT_S for a local GCS to come up, repeated once when the local node misses one of
    Ray's start waits (RAY_START_TIMED_OUT, RAY_PORT_FILE_TIMED_OUT)."""
    import ray

    user_setting = os.environ.get(GCS_PORT_WAIT_SETTING)
    if user_setting is None:
        os.environ[GCS_PORT_WAIT_SETTING] = str(GCS_PORT_WAIT_S)
    try:
        try:
            ray.init(**init_options)
        except Exception as error:
            if RAY_START_TIMED_OUT not in str(error) and RAY_PORT_FILE_TIMED_OUT not in str(error):
                raise
            ray.shutdown()
            ray.init(**init_options)
    finally:
        # Ray reads the setting while ray.init starts the head; the process's environment is the user's again after
        if user_setting is None:
            os.environ.pop(GCS_PORT_WAIT_SETTING, None)


def refuse_lite(store_uri: str) -> None:
    """Ray's workers are many processes; a Milvus Lite database admits one."""
    if is_lite_uri(store_uri):
        raise InvalidArgumentError(
            f"--ray needs a Milvus server or cluster (--milvus-uri http://HOST:19530), not the Milvus Lite file "
            f"{store_uri}: a Lite database is open to one process only, and Ray's workers are many processes")


class RayIndexer:
    """Brings a Milvus server's collection up to date with folders or a manifest, on Ray. A context manager:
    it joins the cluster (or starts a local Ray) on entry and shuts down only a Ray it started."""

    def __init__(self, spec: EncoderSpec, store: MilvusStore, options: RayOptions):
        refuse_lite(store.location)
        require("indexing on Ray", "ray", "pyarrow")
        self.spec, self.store, self.options = spec, store, options
        self._started = False
        self._image_size = 0

    def __enter__(self) -> RayIndexer:
        import ray
        import ray.data

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": self.options.show_progress}
            if self.options.num_cpus and not self.options.address:
                kwargs["num_cpus"] = self.options.num_cpus
            start_ray(address=self.options.address, **kwargs)
            self._started = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.options.show_progress
        context.print_on_execution_start = self.options.show_progress
        self.ray = ray
        return self

    def __exit__(self, *_: object) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    def open_collection(self, model: str, rebuild: bool) -> None:
        """Check the collection against the model, or create it; the model's dimension, build record and
        input size come from a worker (the driver loads no model)."""
        task = self.ray.remote(describe_model).options(**self._encoder_resources())
        dim, build, self._image_size = self.ray.get(task.remote(self.spec))
        if rebuild:
            self.store.drop()
        self.store.open_collection(model, dim, create=True, build=build)

    def index_directory(self, root: str, descriptions: Mapping[str, Any] | None = None,
                        within: Sequence[str] = (), exclude: Sequence[str] = ()) -> IndexSummary:
        started = time.perf_counter()
        root = os.path.abspath(root)
        target = max(8, 4 * int(self.ray.cluster_resources().get("CPU", 1)))
        parts = split_tree(root, target, within, exclude)
        texts = {str(k): _text(v) for k, v in (descriptions or {}).items()}
        items = self.ray.data.from_items([{"folder": p.folder, "recursive": p.recursive, "parts_below": list(p.parts_below)}
                                          for p in parts], override_num_blocks=min(len(parts), 4 * target))
        plan = partial(plan_folder_parts, address=self.store.address, root=root, within=list(within),
                       exclude=list(exclude), descriptions=texts)
        planned = items.map_batches(plan, batch_size=1, batch_format="numpy")
        return self._run(planned, started)

    def index_manifest(self, manifest: str) -> IndexSummary:
        """Index the files a manifest lists (Parquet, CSV or JSON lines with a `path` column, optional
        `description`): local paths, or URIs pyarrow reads (s3://, gs://, ...)."""
        started = time.perf_counter()
        suffix = Path(manifest).suffix.lower()
        if suffix not in MANIFEST_FORMATS:
            raise InvalidArgumentError(f"manifest {manifest!r}: the name must end in one of {', '.join(MANIFEST_FORMATS)}")
        local = "://" not in manifest
        if local and not Path(manifest).is_file():
            raise InvalidArgumentError(f"manifest {manifest!r} does not exist or is not a file")
        source = os.path.abspath(manifest) if local else manifest
        data = self.ray.data
        if suffix == ".parquet":
            listed = data.read_parquet(source)
        elif suffix == ".csv":
            listed = data.read_csv(source)
        else:
            listed = data.read_json(source, lines=True)
        columns = listed.columns()
        if "path" not in columns:
            raise InvalidArgumentError(f"manifest {manifest!r} has no 'path' column (it has: {', '.join(columns)})")
        listed = listed.select_columns(["path"] + (["description"] if "description" in columns else []))
        base = os.path.dirname(source) if local else os.getcwd()
        plan = partial(plan_manifest_block, address=self.store.address, base=base)
        planned = listed.map_batches(plan, batch_size=1000, batch_format="numpy")
        return self._run(planned, started)

    def _run(self, planned: Any, started: float) -> IndexSummary:
        if not self._image_size:
            raise RuntimeError("open_collection() comes first")
        # one plan task may find 10^5 files: its rows are cut into batch-sized blocks so that decoding spreads out
        decoded = planned.repartition(target_num_rows_per_block=self.spec.batch_size).map_batches(
            partial(decode_files, min_side=self._image_size), batch_size=self.spec.batch_size, batch_format="numpy",
            # room for a batch of decoded photos, so that a node runs no more decoders than its memory holds; as these
            # arguments differ from the encoders', Ray Data also keeps decoding out of the encoder actors (it fuses
            # stages whose arguments are equal): decoding scales over every CPU, encoding over the GPUs
            num_cpus=1, memory=self.spec.batch_size * DECODED_PHOTO_BYTES)
        spec = self.spec

        class EncodeWithSpec(EncodeImages):  # the spec travels with the class: no constructor arguments to lose
            def __init__(self) -> None:
                super().__init__(spec)

        encoded = decoded.map_batches(EncodeWithSpec, batch_size=self.spec.batch_size,
                                      batch_format="numpy", compute=self.ray.data.ActorPoolStrategy(size=self._encoder_count()),
                                      **self._encoder_resources())  # Ray Data restarts a killed actor and retries its batch
        sink = _milvus_sink(self.store.address)
        encoded.write_datasink(sink)
        self.store.flush()
        summary: IndexSummary = sink.summary
        summary.failed.sort(key=lambda f: f.path)
        summary.seconds = time.perf_counter() - started
        return summary

    def _encoder_resources(self) -> dict[str, float]:
        gpus = self.options.gpus_per_encoder
        if gpus is None:
            gpus = 1.0 if self.ray.cluster_resources().get("GPU", 0) else 0.0
        return {"num_gpus": gpus} if gpus else {"num_cpus": 1.0}

    def _encoder_count(self) -> int:
        if self.options.encoders:
            return self.options.encoders
        return max(1, int(self.ray.cluster_resources().get("GPU", 0)))


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return " / ".join(str(v) for v in value.values() if v)
    return str(value)
