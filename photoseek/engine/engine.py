"""ImageSearchEngine: the facade that wires an encoder, a store and the indexer together (image_search.py is its
public face). It holds no logic of its own beyond checking arguments: ranking by words lives in ranking.py,
duplicates in duplicates.py, composed queries in photoseek/query.py, the activation policy in the encoders.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from photoseek.encoders.encoder import DEFAULT_MODEL, CLIPEncoder, normalize
from photoseek.encoders.multilingual import QueryRouter, planned_query_encoder
from photoseek.encoders.open_clip_backend import architecture_quick_gelu, trained_activation
from photoseek.engine.duplicates import (
    DEFAULT_MAX_HASH_DISTANCE,
    DEFAULT_SIMILARITY,
    PixelVerdicts,
    find_duplicates,
    indexed_picture,
)
from photoseek.engine.ranking import Ranked, WordRanking
from photoseek.errors import (
    CollectionMismatchError,
    EmptyIndexWarning,
    EncoderError,
    ForeignCollectionError,
    InvalidArgumentError,
    ModelFidelityWarning,
    TextMatchUnavailableWarning,
    warn_caller,
)
from photoseek.indexing.decode import load_rgb
from photoseek.indexing.pipeline import Indexer, IndexSummary, ProgressCallback
from photoseek.indexing.scan import existing_folder
from photoseek.indexing.watch import DEFAULT_DEBOUNCE_SECONDS, FolderWatcher, WatchEvent
from photoseek.query import QueryTerm, combine
from photoseek.results import Duplicates, SearchResult
from photoseek.store.filters import SearchFilter
from photoseek.store.milvus import MilvusStore
from photoseek.store.records import Hit, metadata_from_row, path_id
from photoseek.store.schema import DEFAULT_COLLECTION, CollectionInfo

if TYPE_CHECKING:
    from photoseek.indexing.ray_index import RayOptions

__all__ = ["ImageSearchEngine"]

TEXT_MATCH_MODES = ("auto", "on", "off")
MAX_TOP_K = 1000


class ImageSearchEngine:
    """Index folders of images and search them by text: a thin facade over encoder, store and indexer.

    `model_name=None` means: the model the collection was built with, else ViT-B-32::openai.
    The model loads on first use, once per engine.
    """

    def __init__(self, mode: str = "local", model_name: str | None = None, collection_name: str = DEFAULT_COLLECTION,
                 milvus_uri: str | None = None, milvus_host: str | None = None, milvus_port: str | int | None = None,
                 milvus_token: str | None = None, milvus_user: str | None = None, milvus_password: str | None = None,
                 batch_size: int = 32, device: str | None = "auto", precision: str = "auto", clip_server: str | None = None,
                 runtime: str = "auto", rebuild: bool = False, decode_workers: int | None = None, query_model: str = "auto",
                 drop_foreign_collection: bool = False, text_match: str = "auto",
                 encoder: CLIPEncoder | None = None, store: MilvusStore | None = None):
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be at least 1, got {batch_size}")
        if text_match not in TEXT_MATCH_MODES:
            raise InvalidArgumentError(f"text_match must be one of {', '.join(TEXT_MATCH_MODES)}, got {text_match!r}")
        # auto: words also match descriptions and file and folder names where the store can (BM25);
        # on: the same, with a notice when it cannot; off: CLIP alone
        self.text_match = text_match
        self._text_match_noticed = False
        self._pixel_verdicts = PixelVerdicts()  # pixel checks already made, for groups asked for again
        self.mode = mode
        # what the caller passes in, the caller closes (a shared encoder outlives one engine)
        self._owns_store, self._injected_encoder = store is None, encoder
        self.store = store or MilvusStore(milvus_uri, milvus_host, milvus_port, collection_name, milvus_token,
                                          milvus_user, milvus_password)
        try:
            if rebuild and not drop_foreign_collection:
                self._refuse_to_drop_a_foreign_collection()
            self._setup(mode, model_name, batch_size, device, precision, clip_server, rebuild, decode_workers,
                        query_model, encoder, runtime)
        except BaseException:
            if self._owns_store:
                self.store.close()  # do not keep a Lite database locked for an engine that never came to be
            raise

    def _refuse_to_drop_a_foreign_collection(self) -> None:
        """--rebuild drops the collection: only one photoseek made, unless the caller confirms."""
        try:
            self.store.collection_info()
        except ForeignCollectionError as foreign:
            raise InvalidArgumentError(f"{foreign}; --rebuild would delete it and everything in it. If that is what you "
                                       "want, add --drop-foreign-collection") from None
        except CollectionMismatchError:
            pass

    def _setup(self, mode: str, model_name: str | None, batch_size: int, device: str | None, precision: str,
               clip_server: str | None, rebuild: bool, decode_workers: int | None, query_model: str,
               encoder: CLIPEncoder | None, runtime: str = "auto") -> None:
        info = None if rebuild else self.store.collection_info()
        self._encoder = encoder
        self._encoder_options: dict[str, Any] = {"batch_size": batch_size, "device": device, "precision": precision}
        if mode == "local":
            self._encoder_options["runtime"] = runtime
        if clip_server:
            self._encoder_options["server"] = clip_server
        if mode == "service" and not model_name and info is None and encoder is None:
            # nothing names the model yet: the encoder server says which it serves
            self._encoder = CLIPEncoder(mode=mode, model_name=None, **self._encoder_options)
        self.model_name = model_name or (self._encoder.model_name if self._encoder else None) or \
            (info.model if info else DEFAULT_MODEL)
        self._fidelity_problem: str | None = None
        if info is not None:
            self.store.open_collection(self.model_name, None, create=False)  # fail fast, before loading a model
            built, self._fidelity_problem = activation_check(info)
            if self._fidelity_problem and mode == "local" and built:
                # keep making vectors the way the stored ones were made, so queries and new rows stay comparable
                self._encoder_options["activation"] = built
        self._rebuild_pending = rebuild
        self._decode_workers = decode_workers
        self._query_model = query_model
        self._router: QueryRouter | None = None
        self._word_ranking: WordRanking | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def encoder(self) -> CLIPEncoder:
        if self._encoder is None:
            # a rebuild read no collection in _setup: no old activation is kept, the weights run as trained
            if self._fidelity_problem and not self._rebuild_pending:
                warn_caller(self._fidelity_problem, ModelFidelityWarning)
            encoder = CLIPEncoder(mode=self.mode, model_name=self.model_name, **self._encoder_options)
            if self.mode == "service" and not self._rebuild_pending:
                # a server may not name its model (clip-server does not): its vectors must still fit the collection
                try:
                    self.store.open_collection(self.model_name, encoder.dim, create=False)
                except CollectionMismatchError as error:
                    encoder.close()
                    raise CollectionMismatchError(f"the CLIP server at {self._encoder_options['server']} answers "
                                                  f"{encoder.dim}-d vectors for {self.model_name!r}: {error}") from None
            self._encoder = encoder
        return self._encoder

    def warm(self) -> None:
        """Load the model now, and for Milvus Lite keep the vectors in memory for fast search
        (for long-lived processes such as the HTTP server; a one-shot search does not need it)."""
        _ = self.encoder
        self.store.enable_cache()

    def close(self) -> None:
        if self._encoder is not None and self._encoder is not self._injected_encoder:
            self._encoder.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> ImageSearchEngine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ indexing

    def _drop_collection_for_rebuild(self) -> None:
        """`rebuild=True`: the collection is dropped, once, just before the first index run writes to it."""
        if self._rebuild_pending:
            self.store.drop()
            self._rebuild_pending = False

    def _indexer(self) -> Indexer:
        """An indexer for the collection, created if need be (after the pending rebuild's drop)."""
        self._drop_collection_for_rebuild()
        self.store.open_collection(self.model_name, self.encoder.dim, create=True, build=self.encoder.build)
        return Indexer(self.encoder, self.store, decode_workers=self._decode_workers)

    def index_directory(self, image_dir: str | os.PathLike[str], descriptions: Mapping[str, Any] | None = None,
                        progress: ProgressCallback | None = None, within: Sequence[str] = (),
                        exclude: Sequence[str] = (), ray: RayOptions | None = None) -> IndexSummary:
        """Index every image under `image_dir`, recursively; unchanged files are skipped, deleted ones removed.
        `within`: folders (e.g. a server's allowed roots) outside whose real paths nothing is read.
        `exclude`: glob patterns matched against names and paths relative to `image_dir` (`*.tmp`, `exports/*`).
        `ray`: run on a Ray cluster instead (see index_on_ray; `progress` is then Ray's own)."""
        if ray is not None:
            return self.index_on_ray([image_dir], ray=ray, descriptions=descriptions, within=within, exclude=exclude)
        folder = existing_folder(image_dir)
        return self._indexer().index_directory(folder, descriptions, progress, within, exclude)

    def watch(self, image_dirs: Sequence[str | os.PathLike[str]], stop: threading.Event | None = None,
              on_change: Callable[[str, IndexSummary], None] | None = None, on_event: Callable[[WatchEvent], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None, descriptions: Mapping[str, Any] | None = None,
              within: Sequence[str] = (), exclude: Sequence[str] = (), debounce: float = DEFAULT_DEBOUNCE_SECONDS,
              catch_up: bool = True) -> None:
        """Keep the index current with `image_dirs` until `stop` is set (or Ctrl-C): created, changed, moved
        and deleted files are applied as they happen, by incremental runs of the folders they touched
        (photoseek/indexing/watch.py). With `catch_up`, each folder is brought up to date once the watching
        has begun (changes made before it are not missed; unchanged files cost a stat).
        `on_change(folder, summary)` after each folder is brought up to date; `on_event` also hears of a
        watched folder gone (its rows are kept) or back; `on_error` of a run that failed (tried again)."""
        roots = [os.path.abspath(existing_folder(d)) for d in image_dirs]

        def bring_up_to_date(folders: list[str]) -> None:
            for folder in folders:
                root = max((r for r in roots if folder == r or folder.startswith(r.rstrip(os.sep) + os.sep)), key=len)
                summary = self._indexer().index_directory(folder, descriptions, within=within, exclude=exclude, relative_to=root)
                if on_change is not None:
                    on_change(folder, summary)

        watcher = FolderWatcher(roots, bring_up_to_date, on_event=on_event, on_error=on_error, debounce=debounce,
                                catch_up=catch_up)
        try:
            watcher.run(stop or threading.Event())
        except KeyboardInterrupt:
            pass

    def index_on_ray(self, image_dirs: Sequence[str | os.PathLike[str]] = (), manifest: str | None = None,
                     ray: RayOptions | None = None, descriptions: Mapping[str, Any] | None = None,
                     within: Sequence[str] = (), exclude: Sequence[str] = ()) -> IndexSummary:
        """The same incremental index as index_directory, run on a Ray cluster (photoseek/indexing/ray_index.py),
        for folders and/or a manifest of paths or object-storage URIs. Needs a Milvus server or cluster:
        `milvus_uri="http://HOST:19530"`; `ray=RayOptions(address=...)` (default: $RAY_ADDRESS or a local Ray).
        The driver loads no model: the encoder actors do."""
        from photoseek.indexing.ray_index import EncoderSpec, RayIndexer, RayOptions

        folders = [existing_folder(d) for d in image_dirs]
        if not folders and manifest is None:
            raise InvalidArgumentError("nothing to index: give image folders or a manifest")
        options = dict(self._encoder_options)
        batch_size = int(options.pop("batch_size"))
        spec = EncoderSpec(self.mode, self.model_name, batch_size, tuple(sorted(options.items())))
        summary = IndexSummary()
        with RayIndexer(spec, self.store, ray or RayOptions()) as indexer:
            indexer.open_collection(self.model_name, self._rebuild_pending)
            self._rebuild_pending = False
            for folder in folders:
                summary.add(indexer.index_directory(str(folder), descriptions, within, exclude))
            if manifest is not None:
                summary.add(indexer.index_manifest(manifest))
        return summary

    def index_images(self, image_paths: Sequence[str | os.PathLike[str]], descriptions: Mapping[str, Any] | None = None,
                     progress: ProgressCallback | None = None) -> IndexSummary:
        """Index the given files; paths that do not exist are listed in the summary's failures."""
        if isinstance(image_paths, (str, os.PathLike)):
            image_paths = [image_paths]
        return self._indexer().index_files(image_paths, descriptions, progress)

    # ------------------------------------------------------------------ search

    def search(self, query: str, top_k: int = 5, search_filter: SearchFilter | None = None) -> list[SearchResult]:
        """The `top_k` images closest to `query`, best first."""
        return self._search_batch([query], top_k, search_filter)[0]

    def search_batch(self, queries: Sequence[str], top_k: int = 5,
                     search_filter: SearchFilter | None = None) -> list[list[SearchResult]]:
        """One result list per query, in the same order; all queries are encoded in one batch. Where the
        store can (text_match), photos the query names by their description, file or folder name come first
        (photoseek/engine/ranking.py); scores are cosine similarities."""
        return self._search_batch(queries, top_k, search_filter)

    def _missing_collection(self) -> None:
        """Warn, at the user's line, that there is nothing to search yet."""
        warn_caller(f"collection {self.store.collection_name!r} does not exist at {self.store.location}: "
                    "index some images first", EmptyIndexWarning)

    def _search_batch(self, queries: Sequence[str], top_k: int, search_filter: SearchFilter | None) -> list[list[SearchResult]]:
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise InvalidArgumentError("queries must be a list of strings")
        cleaned = [_check_query(q) for q in queries]
        _check_top_k(top_k)
        if not cleaned:
            return []
        info = self.store.open_collection(self.model_name, None, create=False)
        if info is None:
            self._missing_collection()
            return [[] for _ in cleaned]
        vectors, answered_by = self.router.encode(cleaned, self.encoder.encode_texts)
        vectors = normalize(vectors)
        if self.text_match != "off" and info.text_match:
            if self._word_ranking is None:
                self._word_ranking = WordRanking(self.store, self._encode_words)
            ranked = [self._word_ranking.search(query, vector, top_k, search_filter)
                      for query, vector in zip(cleaned, vectors, strict=True)]
        else:
            if self.text_match == "on" and not self._text_match_noticed:
                self._text_match_noticed = True
                warn_caller(text_match_unavailable(info.name, self.store.location), TextMatchUnavailableWarning)
            ranked = [[Ranked(hit) for hit in hits] for hits in self.store.search(vectors, top_k, search_filter)]
        if not any(ranked) and self.store.count() == 0:
            warn_caller(f"collection {self.store.collection_name!r} holds no images yet", EmptyIndexWarning)
        return [_ranked_results(r, encoder) for r, encoder in zip(ranked, answered_by, strict=True)]

    def _encode_words(self, texts: list[str]) -> np.ndarray:
        """Texts as unit vectors in the collection's space, by the encoder that answers queries in their script."""
        return normalize(self.router.encode(texts, self.encoder.encode_texts)[0])

    def search_composed(self, terms: Sequence[QueryTerm], top_k: int = 5,
                        search_filter: SearchFilter | None = None) -> list[SearchResult]:
        """Images closest to a weighted sum of text and image terms (see photoseek/query.py), best first."""
        terms = list(terms)
        if not terms or not all(isinstance(t, QueryTerm) for t in terms):
            raise InvalidArgumentError("a composed query needs one or more QueryTerm")
        _check_top_k(top_k)
        if self.store.open_collection(self.model_name, None, create=False) is None:
            self._missing_collection()
            return []
        vectors: list[np.ndarray] = []
        texts = [t.text for t in terms if t.text is not None]
        text_vectors = iter(normalize(self.router.encode(texts, self.encoder.encode_texts)[0]) if texts else [])
        ids = [t.image_id for t in terms if t.image_id is not None]
        stored = {int(row["id"]): row for row in self.store.get(ids, with_vectors=True)} if ids else {}
        for term in terms:
            if term.text is not None:
                vector = next(text_vectors)
            elif term.image is not None:
                vector = self.encoder.encode_images([load_rgb(term.image, min_side=self.encoder.image_size)])[0]
            else:
                row = stored.get(int(term.image_id))  # type: ignore[arg-type]
                if row is None:
                    raise InvalidArgumentError(f"image id:{term.image_id} is not in collection {self.store.collection_name!r}")
                vector = normalize(np.asarray(row["vector"], dtype=np.float32)[None])[0]
            vectors.append(vector)
        answered_by = " ".join(t.label for t in terms)
        return _to_results(self.store.search(combine(terms, vectors)[None], top_k, search_filter)[0], answered_by)

    @property
    def router(self) -> QueryRouter:
        """Which text encoder answers which query (the model's own, or a multilingual one)."""
        if self._router is None:
            info = self.store.collection_info()
            dim = info.dim if info else self.encoder.dim
            self._router = QueryRouter(self.model_name, dim, self._query_model, device=self._encoder_options.get("device") or "auto")
        return self._router

    def search_by_image(self, image: str | os.PathLike[str] | bytes | Image.Image, top_k: int = 5,
                        search_filter: SearchFilter | None = None) -> list[SearchResult]:
        """Images that look like `image` (a path, encoded bytes, or a PIL image), best first."""
        _check_top_k(top_k)
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if self.store.open_collection(self.model_name, None, create=False) is None:
            self._missing_collection()
            return []
        vectors = self.encoder.encode_images([load_rgb(image, min_side=self.encoder.image_size)])
        return _to_results(self.store.search(vectors, top_k, search_filter)[0])

    def similar(self, image: str | os.PathLike[str] | int, top_k: int = 5,
                search_filter: SearchFilter | None = None) -> list[SearchResult]:
        """Indexed images closest to an indexed image (given by path or id), itself left out."""
        _check_top_k(top_k)
        image_id = image if isinstance(image, int) else path_id(os.path.abspath(os.fspath(image)))
        rows = self.store.get([image_id], with_vectors=True)
        if not rows:
            raise InvalidArgumentError(f"{image!r} is not in collection {self.store.collection_name!r}: index it first")
        vector = np.asarray(rows[0]["vector"], dtype=np.float32)[None]
        hits = [h for h in self.store.search(vector, min(top_k + 1, MAX_TOP_K), search_filter)[0] if h.id != image_id]
        return _to_results(hits[:top_k])

    def find_duplicates(self, similarity: float = DEFAULT_SIMILARITY, max_hash_distance: int = DEFAULT_MAX_HASH_DISTANCE,
                        search_filter: SearchFilter | None = None, within: Sequence[str] = ()) -> Duplicates:
        """Groups of copies among the photos indexed (photoseek/engine/duplicates.py): candidates whose stored vectors
        are at least `similarity` close and whose perceptual hashes differ in at most `max_hash_distance` of 64 bits,
        each pair then confirmed pixel by pixel from the files as indexed; best copy first (most pixels, then
        oldest). No model is loaded. `within`: real paths of folders outside which no file is read."""
        if not 0 < similarity <= 1:
            raise InvalidArgumentError(f"similarity must be more than 0 and at most 1, got {similarity!r}")
        if isinstance(max_hash_distance, bool) or not isinstance(max_hash_distance, int) or not 0 <= max_hash_distance <= 64:
            raise InvalidArgumentError(f"max_hash_distance must be a whole number of bits from 0 to 64, got {max_hash_distance!r}")
        if self.store.open_collection(self.model_name, None, create=False) is None:
            return Duplicates([])
        if not self.store.has_metadata:
            raise InvalidArgumentError(f"collection {self.store.collection_name!r} was indexed before perceptual hashes were kept: "
                                       "run --mode index on its folders once (nothing is re-encoded)")
        report = find_duplicates(self.store, similarity, max_hash_distance, search_filter, load=indexed_picture(within),
                                 verdicts=self._pixel_verdicts)
        return Duplicates([_to_results(group) for group in report.groups], report.photos_compared, report.without_hash,
                          report.pairs_checked, report.unreadable)

    def image_record(self, image_id: int) -> dict[str, Any] | None:
        """What the index holds about one image (path, size, mtime, description...), or None."""
        rows = self.store.get([image_id])
        return rows[0] if rows else None

    def get_stats(self) -> dict[str, Any]:
        info = self.store.collection_info()
        problem = activation_check(info)[1] if info else None
        return {  # no model is loaded for this: stats of a missing collection answer at once
            "mode": self.mode,
            "model": self.model_name,
            "dim": info.dim if info else (self._encoder.dim if self._encoder is not None else None),
            "collection": self.store.collection_name,
            "exists": info is not None,  # nothing indexed yet: the collection is made by the first index run
            "store": self.store.location,
            "store_kind": "milvus-lite" if self.store.is_lite else "milvus-server",
            "total_images": self.store.count(),
            "query_model": self._query_model,
            "multilingual_query_encoder": planned_query_encoder(self.model_name, self._query_model),
            "model_build": info.build if info else None,
            "text_match": (info.text_match if info else self.store.supports_text_match()) and self.text_match != "off",
            **({"warning": problem} if problem else {}),
        }


def text_match_unavailable(collection: str, location: str) -> str:
    return (f"collection {collection!r} at {location} cannot match words in descriptions and file names (full-text "
            "search needs Milvus Lite or a Milvus server from 2.5): searching by CLIP alone")


def activation_check(info: CollectionInfo) -> tuple[str | None, str | None]:
    """The activation a collection's vectors were made with, and a message when its model's weights were
    trained with another (image_search, as photoseek was called, before the check built OpenAI models with GELU; open_clip 3.x only warns)."""
    if info.build is not None:  # recorded since the check exists: built as its weights were trained
        return info.build.get("activation"), None
    trained = trained_activation(info.model)
    if trained is None:
        return None, None
    # recorded nothing: it was built the way the architecture's config says
    built = "quick_gelu" if architecture_quick_gelu(info.model.partition("::")[0]) else "gelu"
    if built == trained:
        return built, None
    names = {"gelu": "GELU", "quick_gelu": "QuickGELU"}
    return built, (f"collection {info.name!r} holds vectors that {info.model} made with {names[built]}, but its weights "
                   f"were trained with {names[trained]}: search quality is degraded. Search and index keep using "
                   f"{names[built]} for it so its vectors stay comparable; re-encode everything with --rebuild to fix it.")


def _check_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidArgumentError(f"a query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise InvalidArgumentError("the query is empty: type some words to search for")
    return query.strip()


def _check_top_k(top_k: object) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidArgumentError(f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}")


def _ranked_results(ranked: list[Ranked], query_encoder: str) -> list[SearchResult]:
    return [replace(result, matched_words=r.matched_words, matched_in=r.matched_in)
            for result, r in zip(_to_results([r.hit for r in ranked], query_encoder), ranked, strict=True)]


def _to_results(hits: list[Hit], query_encoder: str = "") -> list[SearchResult]:
    if not all(math.isfinite(h.score) for h in hits):  # never a NaN score (invalid JSON) handed to anyone
        raise EncoderError("the model gave vectors that are not numbers; its export may be damaged (delete the model's "
                           "folder under the cache to export it again) or the collection holds a broken vector")
    return [SearchResult(rank=i + 1, path=h.fields.get("path", ""), score=h.score, description=h.fields.get("description", ""),
                         id=h.id, size=int(h.fields.get("size", 0)), mtime=float(h.fields.get("mtime", 0.0)),
                         query_encoder=query_encoder, metadata=metadata_from_row(h.fields))
            for i, h in enumerate(hits)]

