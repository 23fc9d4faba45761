"""The HTTP API and the web page, over one ImageSearchEngine.

    photoseek --mode serve [--host 127.0.0.1] [--port 8000] [--token SECRET]

Files are served only for indexed images, looked up by id in the index, and only while their bytes
are still the ones that were indexed (indexing/files.py): no path from a request ever reaches the
file system.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from photoseek import __version__
from photoseek.engine.duplicates import DEFAULT_MAX_HASH_DISTANCE, DEFAULT_SIMILARITY
from photoseek.errors import CollectionMismatchError, ImageSearchError, InvalidArgumentError, StoreError
from photoseek.indexing.decode import is_raw, load_rgb
from photoseek.indexing.files import FileNotServed, read_indexed_file, unchanged_on_disk, under
from photoseek.indexing.watch import FolderWatcher
from photoseek.paths import thumbnail_dir as default_thumbnail_dir
from photoseek.protocols import ServedEngine
from photoseek.query import compose
from photoseek.results import SearchResult
from photoseek.servers.jobs import IndexJob, IndexJobs
from photoseek.servers.limits import BodyLimit
from photoseek.servers.request_filters import FilterBody, PhotoFilterFields, make_filter, query_filter
from photoseek.servers.thumbnails import ThumbnailCache
from photoseek.store.filters import SearchFilter

WEB_DIR = Path(__file__).resolve().parent / "web"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
logger = logging.getLogger("photoseek")
MEDIA_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
               "gif": "image/gif", "tif": "image/tiff", "tiff": "image/tiff", "heic": "image/heic", "heif": "image/heif"}
_GUARDED = ("/api", "/healthz", "/docs", "/redoc", "/openapi.json")


MAX_QUERY_CHARS = 1000  # far past what a text tower reads (77 tokens); keeps a request's work bounded
MAX_JSON_BYTES = 1024 * 1024


class BatchSearchBody(FilterBody):
    queries: list[Annotated[str, StringConstraints(max_length=MAX_QUERY_CHARS)]] = Field(..., min_length=1, max_length=100)
    top_k: int = 10


class IndexBody(BaseModel):
    folder: Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00]*$")] = Field(
        description="an absolute path (no NUL character)")
    descriptions: dict[str, Any] | None = None
    exclude: list[Annotated[str, StringConstraints(max_length=200)]] = Field([], max_length=100,
                                                                             description="glob patterns of names or relative paths to leave out")


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(netloc: str) -> str:
    """The host of a Host header or an origin's netloc, lower case, without port or IPv6 brackets."""
    netloc = netloc.strip().lower().rpartition("@")[2]
    if netloc.startswith("["):
        return netloc[1:].partition("]")[0]
    return netloc.rpartition(":")[0] if netloc.count(":") == 1 else netloc


def create_app(engine: ServedEngine, token: str | None = None, thumbnail_dir: str | Path | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, index_roots: list[str] | None = None,
               serve_only_under_roots: bool = True, allowed_hosts: Sequence[str] = (),
               watch_folders: Sequence[str] = ()) -> FastAPI:
    """The API over `engine`.

    `watch_folders`: indexed once at start, then kept current while the server runs (their changes
    become index jobs, listed with the others).

    `index_roots`, when given, are the only folders POST /api/index reads (their real paths; a symbolic
    link out of them is not followed); with `serve_only_under_roots`, images are served only from them
    too. Requests must name this machine in their Host header (loopback names, plus `allowed_hosts`),
    and a browser's Origin must be one of those: another site cannot reach the API through the user's
    browser, by DNS rebinding or a cross-site form.
    """
    roots = [os.path.realpath(r) for r in index_roots or []]
    serve_roots = roots if serve_only_under_roots else []
    hosts = {h.lower().strip("[]") for h in (*LOOPBACK_NAMES, *allowed_hosts)}
    jobs = IndexJobs(engine, within=roots)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        watching = None
        if watch_folders:  # once watching, each folder is brought up to date (the watcher's catch-up) as a job
            def submit(folders: list[str]) -> None:
                for folder in folders:
                    jobs.submit(folder)

            watcher = FolderWatcher(list(watch_folders), submit, on_error=lambda error: logger.warning("watching: %s", error))
            watching = threading.Thread(target=watcher.run, args=(stop,), name="watch", daemon=True)
            watching.start()
        yield
        stop.set()
        if watching is not None:
            watching.join(timeout=10)
        jobs.close()  # at shutdown: queued jobs are dropped

    app = FastAPI(title="photoseek", description="Text-to-image search over your photos (CLIP + Milvus).",
                  version=__version__, lifespan=lifespan)
    thumbs = ThumbnailCache(thumbnail_dir or default_thumbnail_dir(engine.store.location))
    app.state.engine, app.state.jobs = engine, jobs

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Response:
        named = host_name(request.headers.get("host", ""))
        if named not in hosts:
            return JSONResponse({"error": f"this server does not answer to the host name {named!r}; "
                                          "start it with --allowed-host NAME to allow it"}, status_code=421)
        origin = request.headers.get("origin")
        if origin is not None and host_name(urlsplit(origin).netloc) not in hosts:
            return JSONResponse({"error": "requests from another site's pages are refused"}, status_code=403)
        if token and request.url.path.startswith(_GUARDED):
            scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
            given = (credentials.strip() if scheme.lower() == "bearer" else "") or request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"error": "a valid token is required (Authorization: Bearer TOKEN or ?token=TOKEN)"},
                                    status_code=401)
        return await call_next(request)

    @app.exception_handler(HTTPError)
    async def http_error(_: Request, error: HTTPError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(ImageSearchError)
    async def library_error(request: Request, error: ImageSearchError) -> JSONResponse:
        status = 400 if isinstance(error, InvalidArgumentError) else 409 if isinstance(error, CollectionMismatchError) \
            else 503 if isinstance(error, StoreError) else 500
        if status >= 500:  # the detail (database path, schema, a library's words) stays in the server's log
            logger.error("%s failed: %s", request.url.path, error)
            message = "the index store is not available; see the server's log" if isinstance(error, StoreError) else \
                "the server failed to answer; see its log"
        else:
            message = str(error).replace(engine.store.location, "the index")
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg', 'invalid')}"
                    for e in error.errors()]
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    def results_payload(results: list[SearchResult]) -> list[dict[str, Any]]:
        return [{**r.to_dict(), "id": str(r.id), "image_url": f"/api/images/{r.id}",
                 "thumbnail_url": f"/api/images/{r.id}/thumbnail"} for r in results]

    def indexed_record(image_id: int) -> dict[str, Any]:
        record = engine.image_record(image_id)
        if record is None:
            raise HTTPError(404, f"no indexed image has id {image_id}")
        return record

    def indexed_file(image_id: int) -> tuple[bytes, dict[str, Any]]:
        """The indexed file's bytes, only if they are still what was indexed (see indexing/files.py)."""
        record = indexed_record(image_id)
        try:
            return read_indexed_file(record, serve_roots), record
        except FileNotServed as refused:
            raise HTTPError(refused.status, str(refused)) from None

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/stats", tags=["service"])
    def stats() -> dict[str, Any]:
        return {**engine.get_stats(), "jobs_running": sum(j.state == "running" for j in jobs.all())}

    @app.get("/api/search", tags=["search"])
    def search(q: str = Query(..., max_length=MAX_QUERY_CHARS, description="what to look for, in words"), top_k: int = 10,
               add: list[str] | None = Query(None, description="terms to add: words, 'W:words' (weight W), or id:N (an indexed image)"),
               subtract: list[str] | None = Query(None, description="terms to subtract, written like add"),
               search_filter: SearchFilter | None = Depends(query_filter)) -> dict[str, Any]:
        started = time.perf_counter()
        if add or subtract:
            for term in [*(add or []), *(subtract or [])]:
                if len(term) > MAX_QUERY_CHARS:
                    raise InvalidArgumentError(f"a query term is longer than {MAX_QUERY_CHARS} characters")
            # a request names images by id only: never a path on this machine
            terms = compose(q, add or [], subtract or [], allow_paths=False)
            results = engine.search_composed(terms, top_k, search_filter)
        else:
            results = engine.search(q, top_k, search_filter)
        return {"query": q, "results": results_payload(results), "took_ms": round((time.perf_counter() - started) * 1000, 1)}

    @app.post("/api/search/batch", tags=["search"])
    def search_batch(body: BatchSearchBody) -> dict[str, Any]:
        result_lists = engine.search_batch(body.queries, body.top_k,
                                           make_filter(body.folder, body.ext, body.modified_after, body.modified_before, body))
        return {"results": [{"query": q, "results": results_payload(r)} for q, r in zip(body.queries, result_lists, strict=True)]}

    @app.post("/api/search/image", tags=["search"])
    async def search_image(file: UploadFile = File(...), top_k: int = Form(10), folder: str | None = Form(None),
                           ext: list[str] | None = Form(None), modified_after: str | None = Form(None),
                           modified_before: str | None = Form(None), taken_after: str | None = Form(None, max_length=40),
                           taken_before: str | None = Form(None, max_length=40), camera: str | None = Form(None, max_length=100),
                           near: str | None = Form(None, max_length=80),
                           min_width: int | None = Form(None, ge=1, le=1_000_000)) -> dict[str, Any]:
        # a bad filter fails before the upload is read
        search_filter = make_filter(folder, ext, modified_after, modified_before,
                                    PhotoFilterFields(taken_after=taken_after, taken_before=taken_before, camera=camera, near=near,
                                                      min_width=min_width))
        data = bytearray()
        while chunk := await file.read(1 << 20):
            data += chunk
            if len(data) > max_upload_bytes:
                raise HTTPError(413, f"upload larger than {max_upload_bytes // (1024 * 1024)} MB")
        # decoding a large upload takes seconds of CPU: off the event loop, so /healthz and small requests stay fast
        results = await run_in_threadpool(engine.search_by_image, bytes(data), top_k, search_filter)
        return {"results": results_payload(results)}

    @app.get("/api/similar/{image_id}", tags=["search"])
    def similar(image_id: int, top_k: int = 10, search_filter: SearchFilter | None = Depends(query_filter)) -> dict[str, Any]:
        indexed_record(image_id)
        return {"results": results_payload(engine.similar(image_id, top_k, search_filter))}

    @app.get("/api/duplicates", tags=["search"])
    def duplicates(similarity: float = Query(DEFAULT_SIMILARITY, gt=0, le=1),
                   max_hash_distance: int = Query(DEFAULT_MAX_HASH_DISTANCE, ge=0, le=64),
                   search_filter: SearchFilter | None = Depends(query_filter)) -> dict[str, Any]:
        """Groups of copies (confirmed pixel by pixel), best copy first (see the README, Duplicates)."""
        found = engine.find_duplicates(similarity, max_hash_distance, search_filter, within=serve_roots)
        return {"groups": [results_payload(group) for group in found.groups], "photos_compared": found.photos_compared,
                "without_hash": found.without_hash, "pairs_checked": found.pairs_checked, "unreadable": found.unreadable}

    @app.get("/api/images/{image_id}", tags=["images"])
    def image(image_id: int) -> Response:
        data, record = indexed_file(image_id)
        if is_raw(record["path"]):  # no browser shows a RAW file: its preview (or developed picture) as a JPEG
            buffer = io.BytesIO()
            load_rgb(data, raw=True).save(buffer, format="JPEG", quality=92)
            return Response(buffer.getvalue(), media_type="image/jpeg")
        return Response(data, media_type=MEDIA_TYPES.get(record.get("ext", ""), "application/octet-stream"))

    @app.get("/api/images/{image_id}/thumbnail", tags=["images"])
    def thumbnail(image_id: int) -> Response:
        record = indexed_record(image_id)
        # A cached thumbnail was made from verified bytes, so a stat suffices to answer with it; reading and
        # hashing the whole original for each of a results page's thumbnails would cost ~10 ms per photo.
        cached = thumbs.read(image_id, float(record["mtime"]))
        if cached is None or not unchanged_on_disk(record) or (serve_roots and not under(os.path.realpath(record["path"]), serve_roots)):
            data, record = indexed_file(image_id)
            cached = thumbs.make(image_id, data, float(record["mtime"]), raw=is_raw(record["path"]))
        return Response(cached, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.post("/api/index", status_code=202, tags=["index"])
    def start_index(body: IndexBody) -> dict[str, Any]:
        if not os.path.isabs(body.folder):
            raise InvalidArgumentError(f"folder {body.folder!r} must be an absolute path")
        folder = os.path.abspath(body.folder)
        # the roots first, on the real path: a client learns nothing about what exists outside them
        if roots and not under(os.path.realpath(folder), roots):
            raise HTTPError(403, f"this server only indexes folders under: {', '.join(roots)}")
        if not os.path.isdir(folder):
            raise InvalidArgumentError(f"folder {body.folder!r} does not exist or is not a folder")
        return jobs.submit(folder, body.descriptions, body.exclude).to_dict()

    def job_state(job_id: str, found: IndexJob | None) -> dict[str, Any]:
        if found is None:
            raise HTTPError(404, f"no job {job_id}")
        return found.to_dict()

    @app.delete("/api/index/{job_id}", tags=["index"])
    def cancel_index_job(job_id: str) -> dict[str, Any]:
        return job_state(job_id, jobs.cancel(job_id))

    @app.get("/api/index", tags=["index"])
    @app.get("/api/jobs", tags=["index"])
    def list_jobs() -> list[dict[str, Any]]:
        return [j.to_dict() for j in jobs.all()]

    @app.get("/api/index/{job_id}", tags=["index"])
    @app.get("/api/jobs/{job_id}", tags=["index"])
    def job(job_id: str) -> dict[str, Any]:
        return job_state(job_id, jobs.get(job_id))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    app.add_middleware(BodyLimit, limit_for=lambda path: max_upload_bytes + 65536 if path == "/api/search/image" else MAX_JSON_BYTES)
    return app


def machine_names(host: str) -> list[str]:
    """The names a client may use for this server bound to `host`: that address, or for a wildcard bind the
    machine's host name and addresses."""
    import socket

    if host not in ("0.0.0.0", "::", ""):
        return [host]
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    return sorted(names)


def serve(engine: ServedEngine, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          index_roots: list[str] | None = None, on_ready: Callable[[], None] | None = None,
          serve_only_under_roots: bool = True, allowed_hosts: Sequence[str] = (), watch_folders: Sequence[str] = ()) -> None:
    """Serve the API and page until interrupted; `on_ready` is called once the port is ours and the model warm."""
    from photoseek.servers.listening import exit_cleanly_on_sigterm, listening_socket, run_app
    from photoseek.servers.local_channel import close_channel, open_channel

    exit_cleanly_on_sigterm()  # before the channel exists: a SIGTERM right after it appears must remove it
    sock = listening_socket(host, port)  # a busy port fails now, before the model loads
    try:
        engine.warm()  # model loaded and (Lite) vectors in memory before the first request
    except BaseException:
        sock.close()
        raise
    app = create_app(engine, token=token, index_roots=index_roots, serve_only_under_roots=serve_only_under_roots,
                     allowed_hosts=[*machine_names(host), *allowed_hosts], watch_folders=watch_folders)
    # so that this user's CLI uses this server instead of opening the store (for Lite: the store is locked anyway)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
    channel = open_channel(engine.store.location, engine.store.collection_name, engine.model_name, url)
    try:
        if on_ready:
            on_ready()
        run_app(app, sock, extra=[channel[0]] if channel else [])
    finally:
        if channel:
            close_channel(channel[1], channel[2])
