"""image_search: text-to-image search over your photo folders with CLIP and Milvus.

Python:
    from image_search import ImageSearchEngine, print_results
    with ImageSearchEngine(model_name="ViT-B-32::openai", collection_name="my_images") as engine:
        engine.index_directory("/path/to/images")
        print_results(engine.search("a cute cat", top_k=5))

Command line:
    python image_search.py --mode index --image-dir DIR
    python image_search.py --mode search --query "a cute cat" --top-k 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clip_encoder import DEFAULT_MODEL, CLIPEncoder, architecture_quick_gelu, normalize, pick_device, trained_activation
from errors import (
    CollectionMismatchError,
    EncoderError,
    ImageSearchError,
    InvalidArgumentError,
    ModelFidelityWarning,
    StoreLockedError,
)
from image_loading import load_rgb
from indexer import Indexer, IndexSummary, ProgressCallback
from milvus_store import DEFAULT_COLLECTION, CollectionInfo, Hit, MilvusStore, SearchFilter, is_lite_uri, path_id, resolve_uri
from multilingual import QueryRouter, planned_query_encoder
from search_results import SearchResult, format_results, print_results

__all__ = ["ImageSearchEngine", "SearchResult", "SearchFilter", "IndexSummary", "print_results", "main"]

MAX_TOP_K = 1000


class EmptyIndexWarning(UserWarning):
    """A search ran against a collection that does not exist or holds no images."""


class ImageSearchEngine:
    """Index folders of images and search them by text: a thin facade over encoder, store and indexer.

    `model_name=None` means: the model the collection was built with, else ViT-B-32::openai.
    The model loads on first use, once per engine.
    """

    def __init__(self, mode: str = "local", model_name: str | None = None, collection_name: str = DEFAULT_COLLECTION,
                 milvus_uri: str | None = None, milvus_host: str | None = None, milvus_port: str | int | None = None,
                 milvus_token: str | None = None, milvus_user: str | None = None, milvus_password: str | None = None,
                 batch_size: int = 32, device: str | None = "auto", precision: str = "auto", clip_server: str | None = None,
                 rebuild: bool = False, decode_workers: int | None = None, query_model: str = "auto",
                 encoder: CLIPEncoder | None = None, store: MilvusStore | None = None):
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be at least 1, got {batch_size}")
        self.mode = mode
        # what the caller passes in, the caller closes (a shared encoder outlives one engine)
        self._owns_store, self._injected_encoder = store is None, encoder
        self.store = store or MilvusStore(milvus_uri, milvus_host, milvus_port, collection_name, milvus_token,
                                          milvus_user, milvus_password)
        try:
            self._setup(mode, model_name, batch_size, device, precision, clip_server, rebuild, decode_workers,
                        query_model, encoder)
        except BaseException:
            if self._owns_store:
                self.store.close()  # do not keep a Lite database locked for an engine that never came to be
            raise

    def _setup(self, mode: str, model_name: str | None, batch_size: int, device: str | None, precision: str,
               clip_server: str | None, rebuild: bool, decode_workers: int | None, query_model: str,
               encoder: CLIPEncoder | None) -> None:
        info = None if rebuild else self.store.collection_info()
        self._encoder = encoder
        self._encoder_options: dict[str, Any] = {"batch_size": batch_size, "device": device, "precision": precision}
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

    # ------------------------------------------------------------------ lifecycle

    @property
    def encoder(self) -> CLIPEncoder:
        if self._encoder is None:
            if self._fidelity_problem and not self._rebuild_pending:
                warnings.warn(self._fidelity_problem, ModelFidelityWarning, stacklevel=3)
            if self._rebuild_pending:
                self._encoder_options.pop("activation", None)  # a rebuild makes the vectors right
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

    def _indexer(self) -> Indexer:
        if self._rebuild_pending:
            self.store.drop()
            self._rebuild_pending = False
        self.store.open_collection(self.model_name, self.encoder.dim, create=True, build=self.encoder.build)
        return Indexer(self.encoder, self.store, decode_workers=self._decode_workers)

    def index_directory(self, image_dir: str | os.PathLike[str], descriptions: Mapping[str, Any] | None = None,
                        progress: ProgressCallback | None = None) -> IndexSummary:
        """Index every image under `image_dir`, recursively; unchanged files are skipped, deleted ones removed."""
        folder = Path(image_dir).expanduser()
        if not folder.is_dir():
            raise InvalidArgumentError(f"image folder {str(image_dir)!r} does not exist or is not a folder")
        return self._indexer().index_directory(folder, descriptions, progress)

    def index_images(self, image_paths: Sequence[str | os.PathLike[str]], descriptions: Mapping[str, Any] | None = None,
                     progress: ProgressCallback | None = None) -> IndexSummary:
        """Index the given files; paths that do not exist are listed in the summary's failures."""
        if isinstance(image_paths, (str, os.PathLike)):
            image_paths = [image_paths]
        return self._indexer().index_files(image_paths, descriptions, progress)

    # ------------------------------------------------------------------ search

    def search(self, query: str, top_k: int = 5, search_filter: SearchFilter | None = None) -> list[SearchResult]:
        """The `top_k` images closest to `query`, best first."""
        return self.search_batch([query], top_k, search_filter)[0]

    def search_batch(self, queries: Sequence[str], top_k: int = 5,
                     search_filter: SearchFilter | None = None) -> list[list[SearchResult]]:
        """One result list per query, in the same order; all queries are encoded in one batch."""
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise InvalidArgumentError("queries must be a list of strings")
        cleaned = [_check_query(q) for q in queries]
        _check_top_k(top_k)
        if not cleaned:
            return []
        info = self.store.open_collection(self.model_name, None, create=False)
        if info is None:
            warnings.warn(f"collection {self.store.collection_name!r} does not exist at {self.store.location}: "
                          "index some images first", EmptyIndexWarning, stacklevel=2)
            return [[] for _ in cleaned]
        vectors, answered_by = self.router.encode(cleaned, self.encoder.encode_texts)
        hits = self.store.search(normalize(vectors), top_k, search_filter)
        if not any(hits) and self.store.count() == 0:
            warnings.warn(f"collection {self.store.collection_name!r} holds no images yet", EmptyIndexWarning, stacklevel=2)
        return [_to_results(h, encoder) for h, encoder in zip(hits, answered_by, strict=True)]

    @property
    def router(self) -> QueryRouter:
        """Which text encoder answers which query (the model's own, or a multilingual one)."""
        if self._router is None:
            info = self.store.collection_info()
            dim = info.dim if info else self.encoder.dim
            self._router = QueryRouter(self.model_name, dim, self._query_model, device=pick_device(self._encoder_options.get("device")))
        return self._router

    def search_by_image(self, image: str | os.PathLike[str] | bytes | Image.Image, top_k: int = 5,
                        search_filter: SearchFilter | None = None) -> list[SearchResult]:
        """Images that look like `image` (a path, encoded bytes, or a PIL image), best first."""
        _check_top_k(top_k)
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if self.store.open_collection(self.model_name, None, create=False) is None:
            warnings.warn(f"collection {self.store.collection_name!r} does not exist: index some images first",
                          EmptyIndexWarning, stacklevel=2)
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
            "store": self.store.location,
            "store_kind": "milvus-lite" if self.store.is_lite else "milvus-server",
            "total_images": self.store.count(),
            "query_model": self._query_model,
            "multilingual_query_encoder": planned_query_encoder(self.model_name, self._query_model),
            "model_build": info.build if info else None,
            **({"warning": problem} if problem else {}),
        }


def activation_check(info: CollectionInfo) -> tuple[str | None, str | None]:
    """The activation a collection's vectors were made with, and a message when its model's weights were
    trained with another (image_search before the check built OpenAI models with GELU; open_clip 3.x only warns)."""
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


def _to_results(hits: list[Hit], query_encoder: str = "") -> list[SearchResult]:
    return [SearchResult(rank=i + 1, path=h.fields.get("path", ""), score=h.score, description=h.fields.get("description", ""),
                         id=h.id, size=int(h.fields.get("size", 0)), mtime=float(h.fields.get("mtime", 0.0)),
                         query_encoder=query_encoder)
            for i, h in enumerate(hits)]


# ====================================================================== command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image_search", description="Text-to-image search over folders of photos with CLIP and Milvus.",
        epilog="The embedded database defaults to $IMAGE_SEARCH_MILVUS_URI, else $IMAGE_SEARCH_HOME/milvus.db, "
               "else ~/.local/share/image_search/milvus.db.")
    parser.add_argument("--mode", choices=["index", "search", "similar", "stats", "serve", "serve-encoder"], required=True,
                        help="index folders; search by text (--query) or image (--image); similar: images like an indexed "
                             "one (--image); stats; serve: the HTTP API and web page; serve-encoder: a CLIP encoder "
                             "server for service mode")
    parser.add_argument("--encode-mode", choices=["local", "service"], default=None,
                        help="local: the model in this process (open_clip; cn_clip for CN-CLIP/...); service: a CLIP server "
                             "(--clip-server). Default: service when a server is given (--clip-server or IMAGE_SEARCH_CLIP_SERVER), else local")
    parser.add_argument("--model", default=None,
                        help=f"ARCH::PRETRAINED (default: the collection's model, else {DEFAULT_MODEL}), "
                             "e.g. ViT-L-14-336::openai or xlm-roberta-base-ViT-B-32::laion5b_s13b_b90k (multilingual); "
                             "Chinese-CLIP as CN-CLIP/ViT-B-16; a built-in such as shapes-tiny::v1; ARCH::/path/to/checkpoint; "
                             "or an open_clip model folder")
    parser.add_argument("--collection", default=DEFAULT_COLLECTION)
    store = parser.add_argument_group("store")
    store.add_argument("--milvus-uri", help="a Milvus Lite .db path or http://host:port of a Milvus server")
    store.add_argument("--milvus-host")
    store.add_argument("--milvus-port")
    store.add_argument("--milvus-token", default=os.environ.get("MILVUS_TOKEN"))
    index = parser.add_argument_group("index")
    index.add_argument("--image-dir", action="append", help="folder to index, recursively (repeatable)")
    index.add_argument("--descriptions", help="JSON file mapping file names or paths to descriptions")
    index.add_argument("--rebuild", action="store_true", help="drop the collection and encode everything again")
    index.add_argument("--batch-size", type=int, default=32)
    index.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    index.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                       help="image-tower precision; auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32 (exact)")
    index.add_argument("--clip-server", default=os.environ.get("IMAGE_SEARCH_CLIP_SERVER"),
                       help="grpc://host:51000 or http://host:port: a clip-as-service server (clip-server) or our --mode "
                            "serve-encoder (service mode; or set IMAGE_SEARCH_CLIP_SERVER)")
    search = parser.add_argument_group("search")
    search.add_argument("--query", action="append", help="text to search for (repeatable: one result list each)")
    search.add_argument("--image", help="search by this image file (--mode search) or by this indexed image (--mode similar)")
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--query-model", default="auto",
                        help="auto: queries in scripts the model cannot read go to the multilingual encoder made for it "
                             "(e.g. M-CLIP for ViT-B-32::openai); never: always the model's own text tower; or an "
                             "M-CLIP / sentence-transformers model name or folder")
    serve = parser.add_argument_group("serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="default 8000 for serve; for serve-encoder the gRPC port, default 51000 "
                                                  "(clip-as-service's)")
    serve.add_argument("--http-port", type=int, help="serve-encoder's HTTP JSON port (default: --port + 1)")
    serve.add_argument("--token", default=os.environ.get("IMAGE_SEARCH_TOKEN"),
                       help="require this token on every API route (or set IMAGE_SEARCH_TOKEN)")
    serve.add_argument("--index-root", action="append", help="only allow POST /api/index under this folder (repeatable)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the libraries' logs")
    return parser


def _progress_bar(quiet: bool) -> tuple[ProgressCallback, Any]:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", disable=True if quiet else None, file=sys.stderr, dynamic_ncols=True)

    def update(progress: Any) -> None:
        if bar.total != progress.total:
            bar.reset(total=progress.total)
            bar.set_postfix_str(f"{progress.unchanged} unchanged", refresh=False)
        bar.n = progress.done
        if progress.failed:
            bar.set_postfix_str(f"{progress.unchanged} unchanged, {progress.failed} failed", refresh=False)
        bar.refresh()

    return update, bar


def _load_descriptions(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidArgumentError(f"cannot read --descriptions {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise InvalidArgumentError(f"--descriptions {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"--descriptions {path} must hold a JSON object mapping file names to descriptions")
    return data


def _open_engine(args: argparse.Namespace) -> Any:
    """The engine, or, when a running image_search server holds the Lite database, that server's API."""
    try:
        return ImageSearchEngine(
            mode=args.encode_mode or ("service" if args.clip_server else "local"), model_name=args.model, collection_name=args.collection, milvus_uri=args.milvus_uri,
            milvus_host=args.milvus_host, milvus_port=args.milvus_port, milvus_token=args.milvus_token,
            batch_size=args.batch_size, device=args.device, precision=args.precision, clip_server=args.clip_server,
            rebuild=args.rebuild, query_model=args.query_model)
    except StoreLockedError:
        from remote_engine import RemoteEngine, find_server

        uri = resolve_uri(args.milvus_uri, args.milvus_host, args.milvus_port)
        advert = find_server(uri) if args.mode != "serve" and is_lite_uri(uri) else None
        if advert is None:
            raise
        if args.rebuild:
            raise InvalidArgumentError(f"--rebuild cannot run while the server at {advert['url']} (pid {advert['pid']}) holds {uri}; stop it first") from None
        print(f"note: {uri} is held by the image_search server at {advert['url']} (pid {advert['pid']}); using its API",
              file=sys.stderr)
        return RemoteEngine(advert["url"], args.token)


def _run(args: argparse.Namespace) -> int:
    if args.mode == "serve-encoder":
        from encoder_server import serve_encoder
        from serving import listening_socket

        port, http_port = args.port or 51000, args.http_port or (args.port or 51000) + 1
        for busy in (port, http_port):  # before the model loads: a busy port fails in a second
            listening_socket(args.host, busy).close()
        encoder = CLIPEncoder(mode="local", model_name=args.model or DEFAULT_MODEL, batch_size=args.batch_size,
                              device=args.device, precision=args.precision)
        print(f"encoder {encoder.model_name} ({encoder.dim}-d): grpc://{args.host}:{port} (clip-client, clip-as-service's "
              f"gRPC protocol) and http://{args.host}:{http_port} (its HTTP JSON protocol)", file=sys.stderr)
        serve_encoder(encoder, args.host, port, http_port)
        return 0
    engine = _open_engine(args)
    with engine:
        if args.mode == "index":
            if not args.image_dir:
                raise InvalidArgumentError("--mode index needs --image-dir")
            descriptions = _load_descriptions(args.descriptions)
            total = IndexSummary()
            for folder in args.image_dir:
                update, bar = _progress_bar(args.quiet or args.json)
                try:
                    summary = engine.index_directory(folder, descriptions, progress=update)
                finally:
                    bar.close()
                total.indexed += summary.indexed
                total.unchanged += summary.unchanged
                total.removed += summary.removed
                total.descriptions_updated += summary.descriptions_updated
                total.failed += summary.failed
                total.seconds += summary.seconds
            if args.json:
                print(json.dumps(total.to_dict(), ensure_ascii=False, indent=2))
            else:
                print(f"indexed {total.indexed}, unchanged {total.unchanged}, removed {total.removed}, "
                      f"failed {len(total.failed)}" + (f", descriptions updated {total.descriptions_updated}"
                                                       if total.descriptions_updated else "")
                      + f" in {total.seconds:.1f}s")
                for failure in total.failed:
                    print(f"  failed: {failure.path}: {failure.reason}", file=sys.stderr)
            # Partial failures are reported, not fatal; a run that could index nothing is.
            return 1 if total.failed and total.indexed + total.unchanged == 0 else 0
        if args.mode == "serve":
            from http_api import serve

            port = args.port or 8000
            serve(engine, args.host, port, token=args.token, index_roots=args.index_root,
                  on_ready=lambda: print(f"serving on http://{args.host}:{port}/ (API docs at /docs)", file=sys.stderr))
            return 0
        if args.mode in ("search", "similar") and args.image:
            results = engine.search_by_image(args.image, args.top_k) if args.mode == "search" else \
                engine.similar(args.image, args.top_k)
            print(json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2) if args.json else format_results(results))
            return 0
        if args.mode == "similar":
            raise InvalidArgumentError("--mode similar needs --image PATH of an indexed image")
        if args.mode == "search":
            if not args.query:
                raise InvalidArgumentError("--mode search needs --query or --image")
            result_lists = engine.search_batch(args.query, top_k=args.top_k)
            if args.json:
                payload: Any = [r.to_dict() for r in result_lists[0]] if len(result_lists) == 1 else \
                    [{"query": q, "results": [r.to_dict() for r in rs]} for q, rs in zip(args.query, result_lists, strict=False)]
                print(json.dumps(payload, ensure_ascii=False, indent=2))
            else:
                for query, results in zip(args.query, result_lists, strict=False):
                    if len(args.query) > 1:
                        print(f"# {query}")
                    print(format_results(results))
            return 0
        stats = engine.get_stats()
        print(json.dumps(stats, ensure_ascii=False, indent=2) if args.json else
              "\n".join(f"{key}: {value}" for key, value in stats.items()))
        return 0


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        # Errors reach the user as one translated line; the libraries' own logs and tracebacks would bury it.
        logging.disable(logging.ERROR)
    try:
        return _run(args)
    except InvalidArgumentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ImageSearchError as error:
        print(f"error: {error}", file=sys.stderr)
        if args.mode == "index" and isinstance(error, EncoderError):
            print("what was indexed so far is kept; run the same command again to finish", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: what was indexed so far is kept; run again to finish", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
