"""The command line: `photoseek --mode MODE ...` (or `python image_search.py ...`, `python -m photoseek`), one handler per mode.

Only this module (and the HTTP layer) talks to people: it prints results, progress and one line per
error, and turns the library's exceptions into exit codes (2: bad argument, 1: other failure).
It imports the engine and the servers when a mode needs them, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from photoseek import __version__
from photoseek.errors import EncoderError, ImageSearchError, InvalidArgumentError, StoreError, StoreLockedError
from photoseek.extras import require
from photoseek.paths import setting
from photoseek.results import printable

if TYPE_CHECKING:
    from photoseek.indexing.pipeline import IndexSummary, ProgressCallback
    from photoseek.protocols import SearchEngine
    from photoseek.results import SearchResult
    from photoseek.store.filters import SearchFilter

DEFAULT_MODEL = "ViT-B-32::openai"  # photoseek.encoders.base.DEFAULT_MODEL, without importing numpy for --help
DEFAULT_COLLECTION = "image_search"  # milvus_store.DEFAULT_COLLECTION
DEFAULT_DUPLICATE_SIMILARITY = 0.75  # photoseek.engine.duplicates.DEFAULT_SIMILARITY
DEFAULT_MAX_HASH_DISTANCE = 20  # photoseek.engine.duplicates.DEFAULT_MAX_HASH_DISTANCE


MODES = {
    "index": "index folders of photos (again: only what changed)",
    "search": "search by text (--query or words after the command) or by an image (--image)",
    "similar": "photos like an indexed one (--image)",
    "duplicates": "groups of copies of one picture, checked pixel by pixel",
    "stats": "what the index holds",
    "serve": "the HTTP API and web page",
    "serve-encoder": "a CLIP encoder server for service mode (clip-as-service's protocols)",
}
ENCODING = ("index", "search", "serve", "serve-encoder")  # the modes that load a model
FILTERED = ("search", "similar", "duplicates")
STORE = tuple(m for m in MODES if m != "serve-encoder")


class _Compact(argparse.HelpFormatter):
    """A mode's help on one screen: options and their help on one line where the terminal allows."""

    def __init__(self, prog: str) -> None:
        import shutil

        super().__init__(prog, max_help_position=30, width=min(110, max(80, shutil.get_terminal_size().columns)))


class _Options:
    """Declares each option once, with the modes it belongs to: the whole parser (the `--mode` form) gets them all,
    a mode's own parser (`photoseek search ...`, `photoseek search --help`) only its own."""

    def __init__(self, parser: argparse.ArgumentParser, mode: str | None):
        self.parser, self.mode = parser, mode
        self._groups: dict[str, Any] = {}

    def __call__(self, group: str, *flags: str, modes: Sequence[str], shown_in: Sequence[str] | None = None,
                 **kwargs: Any) -> None:
        """`shown_in`: the modes whose help lists the option (default: all of `modes`); the others still take it."""
        if self.mode is not None and self.mode not in modes:
            return
        if self.mode is not None and shown_in is not None and self.mode not in shown_in:
            kwargs["help"] = argparse.SUPPRESS
        if group not in self._groups:
            self._groups[group] = self.parser.add_argument_group(group) if group else self.parser
        self._groups[group].add_argument(*flags, **kwargs)


def build_parser(mode: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every option (`photoseek --mode MODE ...`), or one mode's (`photoseek MODE ...`)."""
    if mode is None:
        parser = argparse.ArgumentParser(
            prog="photoseek", description="Search your photo folders by what is in them (CLIP + Milvus).",
            epilog="Each mode has its own help: photoseek MODE --help. The index is $PHOTOSEEK_MILVUS_URI, else "
                   "$PHOTOSEEK_HOME/milvus.db, else ~/.local/share/photoseek/milvus.db.")
        parser.add_argument("--mode", choices=list(MODES), required=True, help="; ".join(f"{m}: {d}" for m, d in MODES.items()))
    else:
        usage = f"photoseek {mode}{' [QUERY ...]' if mode == 'search' else ' [FOLDER ...]' if mode == 'index' else ''} [options]"
        parser = argparse.ArgumentParser(prog=f"photoseek {mode}", usage=usage, formatter_class=_Compact,
                                         description=MODES[mode][0].upper() + MODES[mode][1:] + ".")
        parser.set_defaults(mode=mode)
        if mode == "search":
            parser.add_argument("words", nargs="*", metavar="QUERY", help="what to look for (or --query, repeatable)")
        if mode == "index":
            parser.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to index (or --image-dir, repeatable)")
    parser.add_argument("--version", action="version", version=f"photoseek {__version__}",
                        help=argparse.SUPPRESS if mode else "show the version and exit")
    option = _Options(parser, mode)
    everywhere = tuple(MODES)
    option("", "--model", modes=everywhere, default=None, metavar="NAME",
           help=f"ARCH::PRETRAINED (default: the index's, else {DEFAULT_MODEL})")
    option("", "--collection", modes=STORE, default=DEFAULT_COLLECTION, metavar="NAME")
    option("", "--milvus-uri", modes=STORE, metavar="URI", help="a Milvus Lite .db folder, or http://host:19530")
    option("store", "--milvus-host", modes=STORE, help=argparse.SUPPRESS if mode else None)
    option("store", "--milvus-port", modes=STORE, help=argparse.SUPPRESS if mode else None)
    option("store", "--milvus-token", modes=STORE, default=os.environ.get("MILVUS_TOKEN"), help=argparse.SUPPRESS if mode else None)
    option("index", "--image-dir", modes=("index", "serve"), action="append", metavar="DIR", help="a folder to index (repeatable)")
    option("index", "--exclude", modes=("index", "serve"), action="append", default=[], metavar="GLOB",
           help="leave out matching files or folders ('*.tmp'; repeatable)")
    option("index", "--descriptions", modes=("index",), metavar="FILE", help="JSON: file name or path -> description")
    option("index", "--watch", modes=("index", "serve"), action="store_true", help="then apply changes as they happen")
    option("index", "--rebuild", modes=("index",), action="store_true", help="drop the collection and encode everything again")
    option("index", "--drop-foreign-collection", modes=("index",), shown_in=(), action="store_true",
           help="with --rebuild: also drop a collection photoseek did not create")
    option("index", "--ray", modes=("index",), nargs="?", const="", default=None, metavar="ADDRESS",
           help="index on a Ray cluster (docs/deployment.md)")
    option("index", "--manifest", modes=("index",), shown_in=(), help="with --ray: a Parquet, CSV or JSON-lines list of paths or s3:// URIs")
    option("index", "--ray-encoders", modes=("index",), shown_in=(), type=int, help="with --ray: encoder actors (default: one per GPU, else one)")
    option("index", "--ray-gpus-per-encoder", modes=("index",), shown_in=(), type=float, help="with --ray: GPUs per encoder actor")
    option("encoder", "--encode-mode", modes=ENCODING[:-1], shown_in=("index",), choices=["local", "service"], default=None,
           help="service: through a CLIP server (implied by --clip-server)")
    option("encoder", "--clip-server", modes=ENCODING[:-1], shown_in=("index",), default=setting("CLIP_SERVER"), metavar="URL",
           help="grpc://host:51000 or http://... (comma-separated: several)")
    option("encoder", "--device", modes=ENCODING, shown_in=("index", "serve-encoder"), default="auto",
           help="auto, cpu, cuda, cuda:1 ...")
    option("encoder", "--runtime", modes=ENCODING, shown_in=("index", "serve-encoder"), default="auto", choices=["auto", "onnx", "torch"],
           metavar="{auto,onnx,torch}", help="auto: ONNX Runtime on a CPU, torch on CUDA")
    option("encoder", "--precision", modes=ENCODING, shown_in=("index", "serve-encoder"), default="auto",
           choices=["auto", "fp32", "int8", "bf16", "fp16"], metavar="P", help="auto, fp32, int8, bf16, fp16 (image tower)")
    option("encoder", "--batch-size", modes=ENCODING, shown_in=("index", "serve-encoder"), type=int, default=32, metavar="N")
    option("search", "--query", modes=("search",), action="append", help="text to search for (repeatable: one list each)")
    option("search", "--add", modes=("search",), action="append", default=[], metavar="TERM",
           help="add words, an image file or id:N, optionally weighted (2:cat)")
    option("search", "--subtract", modes=("search",), action="append", default=[], metavar="TERM", help="subtract a term")
    option("search", "--image", modes=("search", "similar"), help="search by this image file")
    option("search", "--top-k", modes=("search", "similar"), type=int, default=5, help="how many results (default 5)")
    option("search", "--in", modes=FILTERED, dest="within_folder", metavar="DIR",
           help="only photos under this folder (--in . : here)")
    option("search", "--paths-only", modes=FILTERED, action="store_true", help="print only the paths, one per line")
    option("search", "--text-match", modes=("search", "serve"), default="auto", choices=["auto", "on", "off"],
           help="off: by the picture alone, not descriptions or folder names")
    option("search", "--query-model", modes=("search", "serve"), shown_in=("serve",), default="auto", metavar="NAME",
           help="auto, never, or a multilingual text encoder")
    option("duplicates", "--threshold", modes=("duplicates",), type=float, default=DEFAULT_DUPLICATE_SIMILARITY,
           metavar="COSINE", help="how close two photos' vectors must be to be compared (default 0.75)")
    option("duplicates", "--max-hash-distance", modes=("duplicates",), type=int, default=DEFAULT_MAX_HASH_DISTANCE,
           metavar="BITS", help="how far apart two perceptual hashes may be to be compared pixel by pixel (default 20)")
    option("photo filters", "--taken-after", modes=FILTERED, metavar="DATE", help="taken on or after DATE (YYYY-MM-DD[THH:MM])")
    option("photo filters", "--taken-before", modes=FILTERED, metavar="DATE", help="taken on or before DATE")
    option("photo filters", "--camera", modes=FILTERED, metavar="TEXT", help="words of the camera's make and model ('iphone')")
    option("photo filters", "--near", modes=FILTERED, metavar="LAT,LON,KM", help="taken within KM km of a position")
    option("photo filters", "--min-width", modes=FILTERED, type=int, metavar="PIXELS", help="at least PIXELS wide")
    option("serve", "--host", modes=("serve", "serve-encoder"), default="127.0.0.1", help="address to bind (default: this machine only)")
    option("serve", "--port", modes=("serve", "serve-encoder"), type=int,
           help="default 8000 (serve-encoder: its gRPC port, 51000)")
    option("serve", "--http-port", modes=("serve-encoder",), type=int, help="the HTTP JSON port (default: --port + 1)")
    option("serve", "--token", modes=("serve", *FILTERED, "stats", "index"), shown_in=("serve",), default=setting("TOKEN"),
           help="required on every API route (or PHOTOSEEK_TOKEN)")
    option("serve", "--index-root", modes=("serve",), action="append", metavar="DIR",
           help="where it may index and serve from (default: home)")
    option("serve", "--allowed-host", modes=("serve",), action="append", default=[], metavar="NAME",
           help="another name clients use for this server")
    option("serve", "--insecure-no-token", modes=("serve",), action="store_true",
           help="serve a network without --token (anyone reads your photos)")
    option("", "--json", modes=everywhere, action="store_true", help="machine-readable output")
    option("", "-q", "--quiet", modes=everywhere, action="store_true", help="no progress bar")
    option("", "-v", "--verbose", modes=everywhere, action="store_true", help="show the libraries' logs")
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Both forms: `photoseek --mode search --query cat` (the card's) and `photoseek search cat` (rclip's, llm's).
    A mistyped mode is named first, in one line, with the nearest one."""
    argv = list(argv)
    given = next((a for a in argv if not a.startswith("-")), None) if argv and not argv[0].startswith("-") else None
    mode_flag = _flag_value(argv, "--mode")
    wrong = given if given is not None and given not in MODES else mode_flag if mode_flag is not None and mode_flag not in MODES else None
    if wrong is not None:
        import difflib

        near = difflib.get_close_matches(wrong, list(MODES), n=1)
        raise InvalidArgumentError(f"unknown mode {wrong!r}{f' (did you mean {near[0]!r}?)' if near else ''}; "
                                   f"the modes: {', '.join(MODES)} (photoseek MODE --help)")
    if given is not None:
        argv.remove(given)
        args = build_parser(given).parse_args(argv)
        if given == "search" and args.words:
            args.query = [*(args.query or []), " ".join(args.words)]
        if given == "index" and args.folders:
            args.image_dir = [*(args.image_dir or []), *args.folders]
        return _complete(args)
    if any(a in ("-h", "--help") for a in argv):
        if mode_flag is not None:  # photoseek --mode search --help: that mode's help
            build_parser(mode_flag).parse_args(["--help"])
        print(overview())  # photoseek --help: the modes, not every mode's options at once
        raise SystemExit(0)
    if not argv:
        raise InvalidArgumentError("what to do? photoseek MODE ... with MODE one of: " + ", ".join(MODES) +
                                   " (photoseek MODE --help, photoseek --help)")
    return _complete(build_parser().parse_args(argv))


def overview() -> str:
    width = max(len(m) for m in MODES)
    lines = ["usage: photoseek MODE [options]   (or: photoseek --mode MODE [options])", "",
             "Search your photo folders by what is in them (CLIP + Milvus).", "", "modes:"]
    lines += [f"  {m:<{width}}  {d}" for m, d in MODES.items()]
    lines += ["", "photoseek MODE --help lists a mode's options; photoseek --version.", "",
              "examples:",
              "  photoseek index --image-dir ~/Pictures",
              '  photoseek search "a cat on a sofa"',
              "  photoseek serve                     # the web page on http://127.0.0.1:8000/",
              "",
              "The index is $PHOTOSEEK_MILVUS_URI, else $PHOTOSEEK_HOME/milvus.db, else ~/.local/share/photoseek/milvus.db.",
              "Guides: the docs/ folder of the source (searching, models, service mode, HTTP API, deployment)."]
    return "\n".join(lines)


def _flag_value(argv: list[str], flag: str) -> str | None:
    for position, value in enumerate(argv):
        if value == flag and position + 1 < len(argv):
            return argv[position + 1]
        if value.startswith(flag + "="):
            return value.split("=", 1)[1]
    return None


def _complete(args: argparse.Namespace) -> argparse.Namespace:
    """Every option, with its default, whatever the form (a mode's parser declares only its own)."""
    for action in build_parser()._actions:
        if action.dest not in ("help", "version") and not hasattr(args, action.dest):
            setattr(args, action.dest, action.default)
    return args


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


def _open_engine(args: argparse.Namespace) -> SearchEngine:
    """The engine, or, when a running photoseek server holds the Lite database, that server's API."""
    from photoseek.store.lite import is_lite_uri, resolve_uri

    uri = resolve_uri(args.milvus_uri, args.milvus_host, args.milvus_port)
    if args.mode != "serve" and not args.rebuild and (is_lite_uri(uri) or args.mode in ("search", "similar", "duplicates", "stats")):
        remote = _running_server(uri, args)  # found before pymilvus is even imported
        if remote is not None:
            return remote
    from photoseek.engine.engine import ImageSearchEngine

    try:
        return ImageSearchEngine(
            mode=args.encode_mode or ("service" if args.clip_server else "local"), model_name=args.model, collection_name=args.collection, milvus_uri=args.milvus_uri,
            milvus_host=args.milvus_host, milvus_port=args.milvus_port, milvus_token=args.milvus_token,
            batch_size=args.batch_size, device=args.device, precision=args.precision, runtime=args.runtime,
            clip_server=args.clip_server, rebuild=args.rebuild, query_model=args.query_model, drop_foreign_collection=args.drop_foreign_collection,
            text_match=args.text_match)
    except StoreLockedError:
        from photoseek.servers.local_channel import find_channel

        channel = find_channel(uri, args.collection, uri) if args.mode != "serve" and is_lite_uri(uri) else None
        if channel is None:
            raise
        if args.rebuild:
            raise InvalidArgumentError(f"--rebuild cannot run while a photoseek server (pid {channel.pid}) holds {uri}; "
                                       "stop it first") from None
        remote = _running_server(uri, args)
        if remote is None:
            raise
        return remote


def _running_server(uri: str, args: argparse.Namespace) -> SearchEngine | None:
    """This user's running photoseek server of this store and collection, reached through its private socket
    when it passes every check (servers/local_channel.py) and serves the model asked for; else None."""
    from photoseek.servers.local_channel import find_channel, serves
    from photoseek.servers.remote_engine import RemoteEngine
    from photoseek.store.lite import is_lite_uri

    channel = find_channel(uri, args.collection, uri if is_lite_uri(uri) else None, args.model)
    if channel is None:
        return None
    remote = RemoteEngine.over_socket(channel.socket_path, args.token)
    try:
        answer = remote.get_stats()
    except (StoreError, InvalidArgumentError):
        answer = None
    if not serves(answer, uri, args.collection):
        remote.close()
        return None
    print(f"note: {printable(uri)} is held by a photoseek server (pid {channel.pid}, {printable(channel.url)}); "
          "using it", file=sys.stderr)
    return remote


def _serve_encoder(args: argparse.Namespace) -> int:
    require("--mode serve-encoder", "fastapi", "uvicorn")
    from photoseek.encoders.encoder import CLIPEncoder
    from photoseek.servers.encoder_server import serve_encoder
    from photoseek.servers.listening import listening_socket

    port, http_port = args.port or 51000, args.http_port or (args.port or 51000) + 1
    for busy in (port, http_port):  # before the model loads: a busy port fails in a second
        listening_socket(args.host, busy).close()
    encoder = CLIPEncoder(mode="local", model_name=args.model or DEFAULT_MODEL, batch_size=args.batch_size,
                          device=args.device, precision=args.precision, runtime=args.runtime)
    print(f"encoder {encoder.model_name} ({encoder.dim}-d): grpc://{args.host}:{port} (clip-client, clip-as-service's "
          f"gRPC protocol) and http://{args.host}:{http_port} (its HTTP JSON protocol)", file=sys.stderr)
    serve_encoder(encoder, args.host, port, http_port)
    return 0


LARGE_FOR_LITE = 200_000  # rows past which Milvus Lite 3.x's linear costs show (bench/scale.py)


def _index(args: argparse.Namespace, engine: SearchEngine) -> int:
    from photoseek.indexing.pipeline import IndexSummary

    started = time.monotonic()  # the total shown is the wall clock: the model's first preparation included
    descriptions = args.loaded_descriptions  # checked before the engine opened
    total = IndexSummary()
    if args.ray is not None:
        from photoseek.engine.engine import ImageSearchEngine
        from photoseek.indexing.ray_index import RayOptions

        if not isinstance(engine, ImageSearchEngine):
            raise InvalidArgumentError("--ray indexes into a Milvus server, not through a running photoseek server")
        options = RayOptions(address=args.ray or None, encoders=args.ray_encoders, gpus_per_encoder=args.ray_gpus_per_encoder,
                             show_progress=not (args.quiet or args.json))
        total = engine.index_on_ray(args.image_dir or [], args.manifest, options, descriptions, exclude=args.exclude)
    else:
        for folder in args.image_dir:
            update, bar = _progress_bar(args.quiet or args.json)
            try:
                summary = engine.index_directory(folder, descriptions, progress=update, exclude=args.exclude)
            finally:
                bar.close()
            total.add(summary)
    if args.json:
        print(json.dumps(total.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"indexed {total.indexed}, unchanged {total.unchanged}, removed {total.removed}, "
              f"failed {len(total.failed)}" + (f", moved {total.moved}" if total.moved else "")
              + (f", descriptions updated {total.descriptions_updated}" if total.descriptions_updated else "")
              + (f", photo metadata read for {total.metadata_read} indexed before it was kept" if total.metadata_read else "")
              + f" in {time.monotonic() - started:.1f}s")
        for failure in total.failed:
            print(f"  failed: {printable(failure.path)}: {printable(failure.reason)}", file=sys.stderr)
    # Partial failures are reported, not fatal; a run that could index nothing is.
    files = total.indexed + total.unchanged + total.moved
    store = getattr(engine, "store", None)
    if files >= LARGE_FOR_LITE and getattr(store, "is_lite", False) and not args.quiet:
        print(f"note: {files:,} photos in Milvus Lite: past ~{LARGE_FOR_LITE:,}, Lite's searches and re-runs slow down in "
              "proportion (measured at 1M rows: README, How it scales). A Milvus server keeps them flat: "
              "--milvus-uri http://HOST:19530 (pip install milvus gives one: milvus-server --data DIR), and "
              "--mode serve keeps one-shot searches fast", file=sys.stderr)
    if args.watch:
        return _watch(args, engine, descriptions)
    return 1 if total.failed and files == 0 else 0


def _watch(args: argparse.Namespace, engine: SearchEngine, descriptions: dict[str, Any] | None) -> int:
    from photoseek.engine.engine import ImageSearchEngine
    from photoseek.indexing.watch import WatchEvent

    if not isinstance(engine, ImageSearchEngine):
        raise InvalidArgumentError("--watch needs the index itself, but a running photoseek server holds it: "
                                   "let that server watch the folders (--mode serve --watch --image-dir DIR)")

    def now() -> str:
        return time.strftime("%H:%M:%S")

    def changed(folder: str, summary: IndexSummary) -> None:
        if not (summary.indexed or summary.removed or summary.moved or summary.failed or summary.descriptions_updated):
            return  # the catch-up pass once watching begins, finding nothing new
        print(f"{now()} {printable(folder)}: indexed {summary.indexed}, removed {summary.removed}, moved {summary.moved}, "
              f"failed {len(summary.failed)}", flush=True)
        for failure in summary.failed:
            print(f"  failed: {printable(failure.path)}: {printable(failure.reason)}", file=sys.stderr, flush=True)

    def event(happened: WatchEvent) -> None:
        if happened.kind == "gone":
            print(f"{now()} {printable(happened.folders[0])} is gone (unmounted?): its photos stay in the index; watching for it "
                  "to come back", file=sys.stderr, flush=True)
        elif happened.kind == "back":
            print(f"{now()} {printable(happened.folders[0])} is back", file=sys.stderr, flush=True)
        elif happened.kind == "watching":
            count = len(happened.folders)
            print(f"watching {count} folder{'s' if count > 1 else ''} for changes; Ctrl-C stops", file=sys.stderr, flush=True)

    def failed(error: BaseException) -> None:
        print(f"warning: {printable(str(error))}; trying again after the next change", file=sys.stderr, flush=True)

    sys.stdout.flush()  # the first pass's summary, before the wait (a pipe would hold it back)
    # Ctrl-C (or a SIGTERM) asks the watcher to stop after the run in hand, rather than raising wherever the main
    # thread happens to be (inside a store call, a thread pool's shutdown): the usual close path follows
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        engine.watch(args.image_dir, stop, on_change=changed, on_event=event, on_error=failed, descriptions=descriptions,
                     exclude=args.exclude)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0


def _serve(args: argparse.Namespace, engine: SearchEngine) -> int:
    require("--mode serve", "fastapi", "uvicorn", "multipart")
    from photoseek.engine.engine import ImageSearchEngine
    from photoseek.servers.http_api import serve

    if not isinstance(engine, ImageSearchEngine):
        raise InvalidArgumentError("another photoseek server already holds this database")
    port = args.port or 8000
    roots = args.index_root or [os.path.expanduser("~")]
    serve(engine, args.host, port, token=args.token, index_roots=roots, serve_only_under_roots=bool(args.index_root),
          allowed_hosts=args.allowed_host, watch_folders=[os.path.abspath(os.path.expanduser(d)) for d in args.image_dir or []]
          if args.watch else (),
          on_ready=lambda: print(f"serving on http://{args.host}:{port}/ (API docs at /docs); indexing allowed under "
                                 f"{', '.join(roots)}", file=sys.stderr))
    return 0


def _print_results(args: argparse.Namespace, results: list[SearchResult]) -> None:
    from photoseek.results import format_results

    if args.paths_only:
        for result in results:
            print(printable(result.path))
    else:
        print(json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2) if args.json else format_results(results))


def _search_filter(args: argparse.Namespace) -> SearchFilter | None:
    """`--in DIR` (a filter on the stored paths, which are absolute as the folders were given to index) and
    the photo metadata filters; a wrong value is named before anything is opened."""
    from photoseek.store.filters import SearchFilter, photo_filter

    prefix = None
    if args.within_folder is not None:
        folder = os.path.abspath(os.path.expanduser(args.within_folder))
        if not os.path.isdir(folder):
            raise InvalidArgumentError(f"--in {args.within_folder!r}: no such folder")
        prefix = folder.rstrip(os.sep) + os.sep
    try:
        photo = photo_filter(args.taken_after, args.taken_before, args.camera, args.near, args.min_width)
    except InvalidArgumentError as error:
        raise InvalidArgumentError("--" + str(error).replace("_", "-", 1)) from None
    if prefix is None and not photo:
        return None
    return SearchFilter(path_prefix=prefix, **photo)


def _search(args: argparse.Namespace, engine: SearchEngine) -> int:
    search_filter = args.search_filter
    if args.image and not os.path.isfile(os.path.expanduser(args.image)):
        raise InvalidArgumentError(f"--image {args.image!r}: no such file")
    if args.image:
        _print_results(args, engine.search_by_image(args.image, args.top_k, search_filter))
        return 0
    if not args.query:
        raise InvalidArgumentError("--mode search needs --query or --image")
    if args.add or args.subtract:
        if len(args.query) != 1:
            raise InvalidArgumentError("--add and --subtract compose one query: give a single --query")
        from photoseek.query import compose

        _print_results(args, engine.search_composed(compose(args.query[0], args.add, args.subtract), args.top_k, search_filter))
        return 0
    if args.paths_only and len(args.query) > 1:
        raise InvalidArgumentError("--paths-only prints one list of paths: give a single --query")
    result_lists = engine.search_batch(args.query, args.top_k, search_filter)
    if args.json and len(result_lists) > 1:
        print(json.dumps([{"query": q, "results": [r.to_dict() for r in rs]} for q, rs in zip(args.query, result_lists, strict=True)],
                         ensure_ascii=False, indent=2))
        return 0
    for query, results in zip(args.query, result_lists, strict=True):
        if len(args.query) > 1:
            print(f"# {printable(query)}")
        _print_results(args, results)
    return 0


def _similar(args: argparse.Namespace, engine: SearchEngine) -> int:
    if not args.image:
        raise InvalidArgumentError("--mode similar needs --image PATH of an indexed image")
    _print_results(args, engine.similar(args.image, args.top_k, args.search_filter))
    return 0


def _duplicates(args: argparse.Namespace, engine: SearchEngine) -> int:
    from photoseek.results import format_duplicates

    found = engine.find_duplicates(args.threshold, args.max_hash_distance, args.search_filter)
    if args.json:
        print(json.dumps(found.to_dict(), ensure_ascii=False, indent=2))
    elif args.paths_only:  # the copies confirmed pixel by pixel, not the best one of each group
        for group in found.groups:
            for result in group[1:]:
                print(printable(result.path))
    else:
        print(format_duplicates(found))
    if found.without_hash and not args.quiet:
        print(f"note: {found.without_hash} photos were indexed before perceptual hashes were kept and were not compared: "
              "run --mode index on their folders once (nothing is re-encoded)", file=sys.stderr)
    if found.unreadable and not args.quiet:
        print(f"note: {found.unreadable} look-alike pairs were not compared because a file is gone, changed since it was "
              "indexed or unreadable: run --mode index on their folders, then look again", file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace, engine: SearchEngine) -> int:
    stats = engine.get_stats()
    if args.json:
        print(json.dumps(stats, ensure_ascii=False, indent=2))
        return 0
    if not stats.get("exists", True):
        print(f"nothing is indexed yet in collection {stats['collection']!r} at {printable(str(stats['store']))}: "
              "photoseek index --image-dir FOLDER")
        return 0
    for key, value in stats.items():
        if key == "exists":
            continue
        if isinstance(value, dict):  # how the model was built: one readable line
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"{key.replace('_', ' ')}: {printable(str(value))}")
    return 0


# one handler per mode that works on an engine (serve-encoder needs none)
ENGINE_MODES: dict[str, Callable[[argparse.Namespace, SearchEngine], int]] = {
    "index": _index, "search": _search, "similar": _similar, "duplicates": _duplicates, "stats": _stats, "serve": _serve,
}


def _check_exposure(args: argparse.Namespace) -> None:
    """A server reachable from the network without a token hands every photo to anyone there: refused
    unless the user says so in words."""
    loopback = args.host in ("127.0.0.1", "::1", "localhost") or args.host.startswith("127.")
    if args.mode == "serve" and not loopback and not args.token and not args.insecure_no_token:
        raise InvalidArgumentError(
            f"--host {args.host} makes the server reachable from the network, and without --token anyone there could "
            "search, index and download your photos: pass --token SECRET (or set PHOTOSEEK_TOKEN), or "
            "--insecure-no-token if that is really what you want")


def _check_index_arguments(args: argparse.Namespace) -> None:
    """Mistakes in what to index are answered before the store opens or a model loads (in milliseconds),
    and before the first folder is indexed rather than after it."""
    if args.watch:
        _check_watch_arguments(args)
    if args.mode != "index":
        return
    if args.manifest is not None and args.ray is None:
        raise InvalidArgumentError("--manifest is read on a Ray cluster: add --ray (with no address, a Ray starts here)")
    if args.ray_encoders is not None and args.ray_encoders < 1:
        raise InvalidArgumentError(f"--ray-encoders must be at least 1, got {args.ray_encoders}")
    if not args.image_dir and args.manifest is None:
        raise InvalidArgumentError("--mode index needs --image-dir" + (" or --manifest" if args.ray is not None else ""))
    if args.ray is not None:  # before the store opens: a Lite file is refused in milliseconds
        from photoseek.indexing.ray_index import refuse_lite
        from photoseek.store.lite import resolve_uri

        refuse_lite(resolve_uri(args.milvus_uri, args.milvus_host, args.milvus_port))
    from photoseek.indexing.scan import existing_folder

    for folder in args.image_dir or []:
        existing_folder(folder)
    args.loaded_descriptions = _load_descriptions(args.descriptions)


def _check_watch_arguments(args: argparse.Namespace) -> None:
    if args.mode not in ("index", "serve"):
        raise InvalidArgumentError(f"--watch applies to --mode index and serve, not {args.mode}")
    if args.ray is not None:
        raise InvalidArgumentError("--watch keeps a folder current from this machine; --ray indexes once on a cluster")
    if not args.image_dir:
        raise InvalidArgumentError("--watch needs the folders to watch: --image-dir DIR (repeatable)")
    from photoseek.indexing.scan import existing_folder

    for folder in args.image_dir:
        existing_folder(folder)
    if args.mode == "serve":
        roots = [os.path.realpath(os.path.expanduser(r)) for r in args.index_root or [os.path.expanduser("~")]]
        for folder in args.image_dir:
            real = os.path.realpath(os.path.expanduser(folder))
            if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
                raise InvalidArgumentError(f"--image-dir {folder!r} is outside the folders this server may index "
                                           f"({', '.join(roots)}): add --index-root")


def _check_search_arguments(args: argparse.Namespace) -> None:
    if args.top_k is not None and not 1 <= args.top_k <= 1000:
        raise InvalidArgumentError(f"--top-k is how many results to show, from 1 to 1000, got {args.top_k}")
    if args.paths_only and args.json:
        raise InvalidArgumentError("--paths-only and --json are two output formats: choose one")
    filtering = [args.within_folder, args.taken_after, args.taken_before, args.camera, args.near, args.min_width]
    if (any(v is not None for v in filtering) or args.paths_only) and args.mode not in ("search", "similar", "duplicates"):
        raise InvalidArgumentError(f"--in, --paths-only and the photo filters apply to --mode search, similar and duplicates, "
                                   f"not {args.mode}")
    if args.mode == "duplicates" and not 0 < args.threshold <= 1:
        raise InvalidArgumentError(f"--threshold is a cosine similarity above 0 and at most 1, got {args.threshold}")
    if args.mode == "duplicates" and not 0 <= args.max_hash_distance <= 64:
        raise InvalidArgumentError(f"--max-hash-distance is a number of bits from 0 to 64, got {args.max_hash_distance}")
    args.search_filter = _search_filter(args)  # a missing folder or a wrong date is named before the store opens


def _run(args: argparse.Namespace) -> int:
    _check_exposure(args)
    _check_index_arguments(args)
    _check_search_arguments(args)
    if args.mode == "serve-encoder":
        return _serve_encoder(args)
    with contextlib.closing(_open_engine(args)) as engine:
        return ENGINE_MODES[args.mode](args, engine)


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"warning: {printable(str(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except InvalidArgumentError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 2
    warnings.showwarning = _show_warning
    if not args.quiet and not args.json:
        from photoseek.encoders import onnx_backend

        onnx_backend.on_export = lambda what: print(what, file=sys.stderr, flush=True)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        # Errors reach the user as one translated line; the libraries' own logs and tracebacks would bury it.
        logging.disable(logging.ERROR)
    try:
        return _run(args)
    except BrokenPipeError:  # | head: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except InvalidArgumentError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 2
    except ImageSearchError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        if args.mode == "index" and isinstance(error, EncoderError):
            print("what was indexed so far is kept; run the same command again to finish", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: what was indexed so far is kept; run again to finish", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


def console_main() -> None:
    """The process entry point (`photoseek`, `python -m photoseek`, `python image_search.py`): `main`, then a quick exit.

    Once `main` returns, the engine is closed and every write is on disk; what is left is the interpreter
    tearing down torch, ONNX Runtime and gRPC objects one by one, which costs 0.2 s after a search and
    about 1.4 s after torch was loaded. Output is flushed first, then the process ends at once.
    """
    try:
        code = main()
    except SystemExit as stop:  # SIGTERM (servers): their `finally` clauses have run; threads are not waited for
        code = stop.code if isinstance(stop.code, int) else 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe (| head): nothing more to say anyway
        pass
    os._exit(code)
