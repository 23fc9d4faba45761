"""The vector store: one Milvus collection of image rows, through pymilvus' MilvusClient.

The same code serves Milvus Lite (a local `.db`, the default) and a Milvus server (`http://host:port`).
What differs between them is handled here and nowhere else: Lite's single-process file lock,
collections that come back unloaded after a reopen, delete results of different types, counts that
include deleted rows on a server until compaction, and raw grpc errors.

Each collection records the model that produced its vectors (collection property
`image_search.meta`); opening it with another model or dimension raises `CollectionMismatchError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photoseek.errors import CollectionMismatchError, ForeignCollectionError, InvalidArgumentError, StoreError, StoreLockedError
from photoseek.store.filters import SearchFilter, ranges_outside
from photoseek.store.lite import (
    LITE_PAGE_ROWS,
    is_lite_uri,
    lite_lock_is_held,
    lite_users,
    lock_holders,
    quiet_pymilvus,
    resolve_uri,
    silence_lite_alloc_timestamp,
)
from photoseek.store.records import (
    CAMERA_PHRASES,
    DESCRIPTION_MAX_BYTES,
    FINGERPRINT_LENGTH,
    METADATA_FIELDS,
    METADATA_TEXT_BYTES,
    PATH_MAX_BYTES,
    RESULT_FIELDS,
    STATE_FIELDS,
    TEXT_MAX_BYTES,
    Hit,
    ImageRecord,
    IndexedFile,
    indexed_file,
    metadata_fields,
    text_field,
)
from photoseek.store.schema import (
    DEFAULT_COLLECTION,
    META_PROPERTY,
    READABLE_SCHEMAS,
    SCHEMA_VERSION,
    SEARCH_CONSISTENCY,
    STATE_CONSISTENCY,
    UPGRADE_SUFFIX,
    VECTOR_INDEX,
    VECTOR_METRIC,
    CollectionInfo,
    has_text_match,
)
from photoseek.store.words import STOP_WORDS, words_for_matching

if TYPE_CHECKING:
    from photoseek.store.vector_cache import VectorCache

MAX_SEARCH_LIMIT = 16_384  # Milvus' largest top-k


# Equal scores (copies of one photo have equal vectors) are ordered by id, not by the order rows were written:
# a search asks for this many more than k, so that a tie across the k-th place is decided the same way each time.
TIE_MARGIN = 16


SCORE_TIE = 1e-5


SAMPLE_SECONDS = 600.0


logger = logging.getLogger("photoseek")


@dataclass(frozen=True)
class StoreAddress:
    """Enough to open the same collection from another process (a cluster's workers)."""

    uri: str
    collection_name: str
    token: str | None = None
    user: str | None = None
    password: str | None = None

    def open(self) -> MilvusStore:
        return MilvusStore(self.uri, collection_name=self.collection_name, token=self.token, user=self.user,
                           password=self.password)


def _best(hits: Sequence[Hit], top_k: int) -> list[Hit]:
    """The first top_k by score, ties by id. Scores within SCORE_TIE of a step count as equal: copies of one photo
    encoded in different batches differ in the last bits."""
    return sorted(hits, key=lambda hit: (-round(hit.score / SCORE_TIE), hit.id))[:top_k]


class MilvusStore:
    """One collection of image rows in Milvus Lite or a Milvus server."""

    def __init__(self, uri: str | None = None, host: str | None = None, port: str | int | None = None,
                 collection_name: str = DEFAULT_COLLECTION, token: str | None = None,
                 user: str | None = None, password: str | None = None):
        if not collection_name or not collection_name.replace("_", "a").isalnum() or collection_name[0].isdigit():
            raise InvalidArgumentError(
                f"collection name {collection_name!r} must start with a letter or underscore and hold only letters, digits and underscores"
            )
        self.uri = resolve_uri(uri, host, port)
        self.collection_name = collection_name
        self.is_lite = is_lite_uri(self.uri)
        self.address = StoreAddress(self.uri, collection_name, token, user, password)
        self._info: CollectionInfo | None = None
        self._loaded = False
        self._cache_wanted = False
        self._sample: tuple[float, np.ndarray] | None = None  # (when taken, vectors): see sample_vectors
        self._cache: VectorCache | None = None
        kwargs: dict[str, Any] = {"uri": self.uri}
        if token:
            kwargs["token"] = token
        if user:
            kwargs["user"], kwargs["password"] = user, password or ""
        from pymilvus import MilvusClient

        try:
            self._client = MilvusClient(**kwargs)
        except Exception as error:
            raise self._translate(error, "connect") from error
        if self.is_lite:
            lite_users[self.uri] = lite_users.get(self.uri, 0) + 1
            silence_lite_alloc_timestamp()
        self._closed = False

    # ----------------------------------------------------------------- lifecycle and metadata

    @property
    def location(self) -> str:
        return self.uri

    def collection_info(self) -> CollectionInfo | None:
        """The recorded model and dimension, or None when the collection does not exist."""
        if self._info is not None:
            return self._info
        if not self._call("has_collection", self.collection_name):
            if not self._call("has_collection", self.collection_name + UPGRADE_SUFFIX):
                return None
            # an upgrade dropped the old collection only after copying every row: finish it
            self._call("rename_collection", self.collection_name + UPGRADE_SUFFIX, self.collection_name)
        description = self._call("describe_collection", self.collection_name)
        meta_text = (description.get("properties") or {}).get(META_PROPERTY)
        dims = [int(f["params"]["dim"]) for f in description["fields"] if f["name"] == "vector"]
        if not meta_text:
            raise ForeignCollectionError(
                f"collection {self.collection_name!r} at {self.uri} was not created by photoseek "
                "(it records no model); choose another collection name with --collection"
            )
        meta = json.loads(meta_text)
        build = meta.get("build")
        self._info = CollectionInfo(self.collection_name, str(meta["model"]), int(meta.get("dim", dims[0] if dims else 0)),
                                    int(meta.get("schema_version", 0)), dict(build) if isinstance(build, dict) else None,
                                    bool(meta.get("text_match", False)) and any(f["name"] == "text_sparse" for f in description["fields"]))
        return self._info

    def open_collection(self, model: str, dim: int | None, create: bool = True,
                        build: dict[str, Any] | None = None) -> CollectionInfo | None:
        """Check that the collection matches `model` (and `dim` when known); create it if asked, recording
        `build` (how the model was built) with the model's name."""
        info = self.collection_info()
        if info is None:
            if not create:
                return None
            if dim is None:
                raise InvalidArgumentError("the dimension is needed to create a collection")
            return self._create(model, dim, build)
        if info.model != model or (dim is not None and info.dim != dim):
            raise CollectionMismatchError(
                f"collection {self.collection_name!r} at {self.uri} holds {info.dim}-d vectors from model {info.model!r}, "
                f"but the model in use is {model!r}{f' ({dim}-d)' if dim is not None else ''}. "
                f"Use --model {info.model!r} to search or add to it, choose another collection with --collection, "
                "or re-encode everything into this one with --rebuild."
            )
        if info.schema_version not in READABLE_SCHEMAS:
            raise CollectionMismatchError(
                f"collection {self.collection_name!r} has schema version {info.schema_version}, this program writes {SCHEMA_VERSION}; "
                "rebuild it with --rebuild or use another collection"
            )
        if create and info.schema_version < SCHEMA_VERSION:
            return self._upgrade(info)
        return info

    def _upgrade(self, info: CollectionInfo) -> CollectionInfo:
        """Copy every row (vectors included) into a collection of the current schema, then put it in the old
        one's place. A run cut short leaves either the old collection (the copy is started again) or, once
        the old one is dropped, only the complete copy (`collection_info` renames it)."""
        logger.info("collection %s: upgrading schema %d -> %d (rows copied, nothing re-encoded)", self.collection_name,
                    info.schema_version, SCHEMA_VERSION)
        target = self.collection_name + UPGRADE_SUFFIX
        if self._call("has_collection", target):
            self._call("drop_collection", target)
        created = self._create(info.model, info.dim, info.build, name=target)
        self._ensure_loaded()
        old_fields = ["id", "vector", *STATE_FIELDS[1:], "ext"]
        for page in self._pages(old_fields):
            rows = [{**row, **metadata_fields(None), **(text_field(row) if created.text_match else {})} for row in page]
            self._call("insert", target, rows)
        self._call("flush", target)
        expected = self.count()
        self._call("load_collection", target)
        landed = self._call("query", target, filter="", output_fields=["count(*)"], consistency_level=STATE_CONSISTENCY)
        if int(landed[0]["count(*)"]) != expected:
            raise StoreError(f"upgrading collection {self.collection_name!r}: copied {landed[0]['count(*)']} of {expected} rows; "
                             "the original is untouched, run again")
        self._call("drop_collection", self.collection_name)
        self._call("rename_collection", target, self.collection_name)
        self._info, self._loaded = None, False
        upgraded = self.collection_info()
        assert upgraded is not None
        return upgraded

    def drop(self) -> None:
        if self._call("has_collection", self.collection_name):
            self._call("drop_collection", self.collection_name)
        self._info, self._loaded = None, False
        self._cache, self._sample = None, None

    def enable_cache(self) -> int:
        """Keep an in-memory copy of the vectors for fast unfiltered search (Milvus Lite only: the one
        process that can open the database sees every write). Returns the rows loaded."""
        if not self.is_lite:
            return 0
        self._cache_wanted = True
        info = self.collection_info()
        if info is None or self._cache is not None:
            return len(self._cache or ())
        from photoseek.store.vector_cache import VectorCache

        cache = VectorCache(info.dim)
        for page in self._pages(["id", "vector", *self._result_fields()]):
            cache.upsert(page)
        self._cache = cache
        return len(cache)

    def _create(self, model: str, dim: int, build: dict[str, Any] | None, name: str | None = None) -> CollectionInfo:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("path", DataType.VARCHAR, max_length=PATH_MAX_BYTES)
        schema.add_field("description", DataType.VARCHAR, max_length=DESCRIPTION_MAX_BYTES)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime", DataType.DOUBLE)
        schema.add_field("fingerprint", DataType.VARCHAR, max_length=FINGERPRINT_LENGTH * 2)
        schema.add_field("ext", DataType.VARCHAR, max_length=16)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("taken", DataType.DOUBLE)
        schema.add_field("taken_offset", DataType.INT32)
        schema.add_field("camera", DataType.VARCHAR, max_length=METADATA_TEXT_BYTES)
        schema.add_field("camera_words", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=CAMERA_PHRASES,
                         max_length=METADATA_TEXT_BYTES)
        schema.add_field("lens", DataType.VARCHAR, max_length=METADATA_TEXT_BYTES)
        schema.add_field("latitude", DataType.DOUBLE)
        schema.add_field("longitude", DataType.DOUBLE)
        schema.add_field("width", DataType.INT64)
        schema.add_field("height", DataType.INT64)
        schema.add_field("orientation", DataType.INT8)
        schema.add_field("phash", DataType.INT64)
        schema.add_field("phash_mirror", DataType.INT64)
        schema.add_field("meta_version", DataType.INT8)
        index_params = self._client.prepare_index_params()
        index_params.add_index("vector", index_type=VECTOR_INDEX, metric_type=VECTOR_METRIC)
        text_match = self.supports_text_match()
        if text_match:  # words (descriptions, file and folder names) searchable with BM25, computed by Milvus on insert
            from pymilvus import Function, FunctionType

            schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES, enable_analyzer=True,
                             analyzer_params={"tokenizer": "standard",
                                              "filter": ["lowercase", {"type": "stop", "stop_words": sorted(STOP_WORDS)}]})
            schema.add_field("text_sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                         output_field_names=["text_sparse"]))
            index_params.add_index("text_sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        meta: dict[str, Any] = {"model": model, "dim": dim, "schema_version": SCHEMA_VERSION, "text_match": text_match}
        if build is not None:
            meta["build"] = build
        collection = name or self.collection_name
        self._call("create_collection", collection, schema=schema, consistency_level=SEARCH_CONSISTENCY,
                   properties={META_PROPERTY: json.dumps(meta)})
        # the collection is empty, so its indexes are built as they are declared: pymilvus's synchronous wait polls
        # at 0.5 s steps, per index (a second for every new collection)
        self._call("create_index", collection, index_params, sync=False)
        self._call("load_collection", collection)
        if name is not None:  # a collection under construction (an upgrade), not this store's yet
            return CollectionInfo(name, model, dim, SCHEMA_VERSION, None if build is None else dict(build), text_match)
        self._info = CollectionInfo(self.collection_name, model, dim, SCHEMA_VERSION, None if build is None else dict(build),
                                    text_match)
        self._loaded = False
        if self._cache_wanted and self.is_lite:
            from photoseek.store.vector_cache import VectorCache

            self._cache = VectorCache(dim)
        return self._info

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._ensure_exact_index()
        state = self._call("get_load_state", self.collection_name)
        if "Loaded" not in str(state.get("state")):
            self._call("load_collection", self.collection_name)
        self._loaded = True

    def _ensure_exact_index(self) -> None:
        """Collections made before searches were exact carry an approximate index (HNSW on a server,
        AUTOINDEX on Lite) that returned fewer than k results and other rankings under filters: swap it
        for FLAT once (no data is rewritten; the collection is reloaded). A collection left without one (a
        swap cut short between its two steps, or an index dropped by hand) gets one: a server cannot load
        it otherwise."""
        described = self._call("describe_index", self.collection_name, "vector")  # None: no such index
        if described:
            index_type = str(described.get("index_type"))
            if index_type.upper() == VECTOR_INDEX:
                return
            logger.info("collection %s: replacing its %s index with an exact FLAT index", self.collection_name, index_type)
            self._call("release_collection", self.collection_name)
            self._call("drop_index", self.collection_name, "vector")
        else:
            logger.info("collection %s: its vector index is missing; creating an exact FLAT index", self.collection_name)
            self._call("release_collection", self.collection_name)
        index_params = self._client.prepare_index_params()
        index_params.add_index("vector", index_type=VECTOR_INDEX, metric_type=VECTOR_METRIC)
        # Milvus Lite's drop_index drops every index of the collection, whatever the name: put the words'
        # index back too (as _create makes it)
        info = self.collection_info()
        if info is not None and info.text_match and "text_sparse" not in self._call("list_indexes", self.collection_name):
            index_params.add_index("text_sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self._call("create_index", self.collection_name, index_params)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._client.close()
        except Exception:  # closing a dead connection is not worth an error
            pass
        if self.is_lite:
            # pymilvus leaves Lite's in-process server (and its file lock) running after close();
            # stop it when the last store of this process on that database closes, so that another
            # process (a server, the next CLI run) can open it.
            lite_users[self.uri] -= 1
            if lite_users[self.uri] == 0:
                del lite_users[self.uri]
                try:
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(self.uri)
                except Exception:  # an older or newer milvus_lite without this hook
                    pass

    # ----------------------------------------------------------------- writes

    def supports_text_match(self) -> bool:
        """Whether this Milvus has full-text search (a BM25 function): Milvus Lite 3.x, and servers from 2.5."""
        if self.is_lite:
            return True
        try:
            version = str(self._client.get_server_version())
        except Exception:  # an old server without the call: surely older than 2.5
            return False
        return has_text_match(version)

    def upsert(self, records: Sequence[ImageRecord]) -> None:
        if records:
            info = self.collection_info()
            rows = [r.to_row() for r in records]
            if info is not None and info.text_match:
                for row in rows:
                    row.update(text_field(row))
            self._call("upsert", self.collection_name, rows)
            self._sample = None
            if self._cache is not None:
                self._cache.upsert(rows)

    def delete(self, ids: Iterable[int]) -> int:
        ids = [int(i) for i in ids]
        if not ids:
            return 0
        result = self._call("delete", self.collection_name, ids=ids)
        self._sample = None
        if self._cache is not None:
            self._cache.delete(ids)
        # A server answers {'delete_count': n}; Lite answers the list of keys.
        if isinstance(result, dict):
            return int(result.get("delete_count", len(ids)))
        return len(result) if isinstance(result, list) else len(ids)

    def flush(self) -> None:
        """Seal buffered rows into indexed segments (Lite otherwise searches its memtable by brute force in Python)."""
        if self.collection_info() is not None:
            self._call("flush", self.collection_name)

    # ----------------------------------------------------------------- reads

    def count(self) -> int:
        if self.collection_info() is None:
            return 0
        self._ensure_loaded()
        # count(*) honours deletes on both; row-count statistics on a server do not until compaction.
        rows = self._call("query", self.collection_name, filter="", output_fields=["count(*)"],
                          consistency_level=STATE_CONSISTENCY)
        return int(rows[0]["count(*)"]) if rows else 0

    @property
    def has_metadata(self) -> bool:
        """Whether the collection has the metadata fields (schema 2; a version 1 one gains them at its next index run)."""
        info = self.collection_info()
        return info is not None and info.schema_version >= 2

    def _state_fields(self) -> list[str]:
        return STATE_FIELDS + (["meta_version"] if self.has_metadata else [])

    def _result_fields(self) -> list[str]:
        return RESULT_FIELDS + (METADATA_FIELDS if self.has_metadata else [])

    def iter_files(self, expression: str = "") -> Iterator[IndexedFile]:
        """Every row's bookkeeping fields (the rows `expression` selects)."""
        for page in self._pages(self._state_fields(), expression):
            for row in page:
                yield indexed_file(row)

    def _pages(self, fields: list[str], expression: str = "", batch_size: int = LITE_PAGE_ROWS) -> Iterator[list[dict[str, Any]]]:
        """The whole collection, `fields` only, a page at a time (nothing when it does not exist)."""
        if self.collection_info() is None:
            return
        self._ensure_loaded()
        if self.is_lite and "vector" not in fields:
            # Lite's query iterator walks the rows again for every page: 1M rows took 601 s in pages of 4,000 and
            # grow as n^2; one query reads them in one pass (300k rows: 7.4 s against 57.7 s), and without
            # vectors the rows fit in memory (bench/scale.py, README How it scales)
            rows = self._call("query", self.collection_name, filter=expression, output_fields=fields,
                              limit=max(1, self.count()), consistency_level=STATE_CONSISTENCY)
            for start in range(0, len(rows), batch_size):
                yield rows[start : start + batch_size]
            return
        with quiet_pymilvus():  # Lite lacks AllocTimestamp; pymilvus logs a traceback, then copes
            iterator = self._call("query_iterator", self.collection_name, batch_size=batch_size, filter=expression,
                                  output_fields=fields, consistency_level=STATE_CONSISTENCY)
        try:
            while page := self._wrap(iterator.next, "query"):
                yield page
        finally:
            iterator.close()

    def iter_rows_with_vectors(self, search_filter: SearchFilter | None = None) -> Iterator[list[dict[str, Any]]]:
        """Every row `search_filter` selects, vectors and result fields included, a page at a time."""
        expression = search_filter.expression() if search_filter else ""
        near = search_filter.near if search_filter else None
        for page in self._pages(["id", "vector", "fingerprint", *self._result_fields()], expression):
            yield [r for r in page if near.contains(float(r["latitude"]), float(r["longitude"]))] if near else page

    def files_under(self, root: str, except_under: Sequence[str] = ()) -> dict[str, IndexedFile]:
        """The rows of files below `root`, leaving out those below any of `except_under` (its subfolders)."""
        prefix = root.rstrip(os.sep) + os.sep
        skipped = sorted({s.rstrip(os.sep) + os.sep for s in except_under})
        if self.is_lite:  # Lite evaluates expressions row by row in Python, slower than comparing here
            rows = self.iter_files()
        else:  # a server selects the rows itself: a cluster asks for one part of a huge collection at a time
            rows = (f for expression in ranges_outside(prefix, skipped) for f in self.iter_files(expression))
        return {f.path: f for f in rows if f.path.startswith(prefix) and not f.path.startswith(tuple(skipped))}

    def get(self, ids: Sequence[int], with_vectors: bool = False) -> list[dict[str, Any]]:
        if not ids or self.collection_info() is None:
            return []
        self._ensure_loaded()
        fields = self._result_fields() + ["id", "fingerprint"] + (["vector"] if with_vectors else [])
        rows = []
        for start in range(0, len(ids), 1000):
            chunk = [int(i) for i in ids[start : start + 1000]]
            rows.extend(self._call("get", self.collection_name, ids=chunk, output_fields=fields,
                                   consistency_level=STATE_CONSISTENCY))
        return [dict(row) for row in rows]

    def search(self, vectors: np.ndarray, top_k: int, search_filter: SearchFilter | None = None) -> list[list[Hit]]:
        """The top_k rows closest to each vector, best first; equal scores in id order (the same list however the
        rows were written, and for every k)."""
        info = self.collection_info()
        if info is None:
            return [[] for _ in range(len(vectors))]
        self._check_query(info, vectors, search_filter)
        expression = search_filter.expression() if search_filter else ""
        wanted = min(MAX_SEARCH_LIMIT, top_k + TIE_MARGIN)
        if self._cache is not None and not expression:
            return [_best([Hit(i, score, fields) for i, score, fields in hits], top_k) for hits in self._cache.search(vectors, wanted)]
        self._ensure_loaded()
        near = search_filter.near if search_filter else None
        # A circle is not an expression Milvus evaluates: the store narrows to its box, the exact distance
        # decides, and the search widens until k photos inside the circle are found or the box is exhausted.
        limit = wanted if near is None else min(MAX_SEARCH_LIMIT, max(wanted * 4, 64))
        while True:
            results = self._call("search", self.collection_name, data=[v.tolist() for v in vectors], limit=limit,
                                 filter=expression, output_fields=self._result_fields(), search_params={"metric_type": VECTOR_METRIC},
                                 consistency_level=SEARCH_CONSISTENCY)
            hits = [[Hit(int(h["id"]), float(h["distance"]), dict(h.get("entity") or {})) for h in found] for found in results]
            if near is None:
                return [_best(found, top_k) for found in hits]
            inside = [[h for h in found if near.contains(float(h.fields["latitude"]), float(h.fields["longitude"]))]
                      for found in hits]
            exhausted = all(len(found) < limit for found in hits)
            if exhausted or limit >= MAX_SEARCH_LIMIT or all(len(found) >= wanted for found in inside):
                return [_best(found, top_k) for found in inside]
            limit = min(MAX_SEARCH_LIMIT, limit * 4)

    def word_candidates(self, words: str, limit: int, search_filter: SearchFilter | None = None) -> list[dict[str, Any]]:
        """Rows whose indexed words (description, file and folder names) share any of `words`, best BM25 score
        first, at most `limit`: each as {"id", "path", "description", "score"} (and the metadata fields a position
        filter needs). Empty where the collection has no words (a server older than 2.5)."""
        info = self.collection_info()
        analysed = " ".join(words_for_matching(words).split())
        if info is None or not info.text_match or not re.search(r"\w", analysed):
            return []
        self._ensure_loaded()
        expression = search_filter.expression() if search_filter else ""
        near = search_filter.near if search_filter else None
        fields = ["path", "description", *(["latitude", "longitude"] if near is not None else [])]
        found = self._call("search", self.collection_name, data=[analysed], anns_field="text_sparse", limit=min(limit, MAX_SEARCH_LIMIT),
                           filter=expression, output_fields=fields, search_params={"metric_type": "BM25"},
                           consistency_level=SEARCH_CONSISTENCY)[0]
        rows = [{"id": int(h["id"]), "score": float(h["distance"]), **dict(h.get("entity") or {})} for h in found]
        if near is not None:
            rows = [r for r in rows if near.contains(float(r["latitude"]), float(r["longitude"]))]
        return rows

    def sample_vectors(self, size: int) -> np.ndarray:
        """About `size` stored vectors chosen by id (ids are hashes of paths, so this is a fixed random sample of the
        photos: the same photos give the same sample whatever order they were indexed in). Kept until this store
        writes, or for SAMPLE_SECONDS where other processes may write."""
        info = self.collection_info()
        if info is None:
            return np.zeros((0, 0), dtype=np.float32)
        if self._sample is not None and time.monotonic() - self._sample[0] < SAMPLE_SECONDS:
            return self._sample[1]
        total = self.count()
        self._ensure_loaded()
        everything = 2 * size >= total
        below = int((1 << 63) * 2 * size / max(total, 1))
        rows = self._call("query", self.collection_name, filter="id >= 0" if everything else f"id < {below}",
                          output_fields=["id", "vector"], limit=min(4 * size, MAX_SEARCH_LIMIT), consistency_level=SEARCH_CONSISTENCY)
        rows = sorted(rows, key=lambda row: int(row["id"]))[:size]
        sample = np.asarray([row["vector"] for row in rows], dtype=np.float32).reshape(len(rows), info.dim)
        self._sample = (time.monotonic(), sample)
        return sample

    def _check_query(self, info: CollectionInfo, vectors: np.ndarray, search_filter: SearchFilter | None) -> None:
        if vectors.shape[1] != info.dim:
            raise CollectionMismatchError(f"query vectors have {vectors.shape[1]} dimensions, collection {self.collection_name!r} holds {info.dim}")
        if search_filter is not None and search_filter.uses_metadata and not self.has_metadata:
            raise InvalidArgumentError(
                f"collection {self.collection_name!r} was indexed before photo metadata (date taken, camera, position, size) "
                "was kept: run --mode index on its folders once to read it (nothing is re-encoded)"
            )

    # ----------------------------------------------------------------- error translation

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(lambda: getattr(self._client, method)(*args, **kwargs), method)

    def _wrap(self, fn: Any, what: str) -> Any:
        try:
            return fn()
        except Exception as error:
            raise self._translate(error, what) from error

    def _lite_open_failure(self) -> StoreError:
        # pymilvus says only "Open local milvus failed" whatever stopped Milvus Lite from starting (milvus-lite logs
        # why): a lock another process holds is the usual cause; a file where Milvus Lite 3 keeps a folder, another
        if Path(self.uri).exists() and not Path(self.uri).is_dir():
            return StoreError(
                f"{self.uri} is a file, not a Milvus Lite database: Milvus Lite 3 keeps each database in a folder (a .db "
                "file of Milvus Lite 2.x cannot be opened by it). Move the file away or choose another --milvus-uri.")
        holders = lock_holders(self.uri)
        if holders or lite_lock_is_held(self.uri):  # the lock itself, whatever words the error used
            who = f" (process {', '.join(map(str, holders))})" if holders else ""
            return StoreLockedError(
                f"the Milvus Lite database {self.uri} is in use by another process{who}. Milvus Lite allows one process at a time: "
                "stop that process, use the running photoseek server's HTTP API, or keep the index in a Milvus server "
                "(--milvus-uri http://HOST:19530)."
            )
        return StoreError(f"Milvus Lite could not open the database {self.uri}; --verbose shows Milvus Lite's own log of why")

    def _translate(self, error: Exception, what: str) -> StoreError:
        chain: list[BaseException] = []
        current: BaseException | None = error
        while current is not None and len(chain) < 10:
            chain.append(current)
            current = current.__cause__ or current.__context__
        text = " | ".join(f"{e.__class__.__name__}: {e}" for e in chain)
        if self.is_lite and ("DataDirLockedError" in text or "holds the lock" in text or "Open local milvus failed" in text):
            return self._lite_open_failure()
        if not self.is_lite and any(k in text for k in ("UNAVAILABLE", "Fail connecting", "illegal connection", "ConnectionRefused", "Failed to connect")):
            return StoreError(f"cannot reach the Milvus server at {self.uri}: is it running? ({str(error)[:200]})")
        message = getattr(error, "message", None) or str(error)
        return StoreError(f"Milvus {what} failed on {self.uri}: {message[:500]}")
