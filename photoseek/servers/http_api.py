"""The HTTP API and the web page, over one ImageSearchEngine.

    photoseek --mode serve [--host 127.0.0.1] [--port 8000] [--token SECRET]

Files are served only for indexed images, looked up by id in the index, and only while their bytes
are still the ones that were indexed (indexing/files.py): no path from a request ever reaches the
file system.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from photoseek import __version__
from photoseek.errors import CollectionMismatchError, ImageSearchError, InvalidArgumentError, StoreError
from photoseek.indexing.watch import FolderWatcher
from photoseek.paths import thumbnail_dir as default_thumbnail_dir
from photoseek.protocols import ServedEngine
from photoseek.servers.jobs import IndexJobs
from photoseek.servers.limits import BodyLimit
from photoseek.servers.routes import ROUTERS
from photoseek.servers.routes.context import HTTPError, ServerContext
from photoseek.servers.routes.service import WEB_DIR
from photoseek.servers.thumbnails import ThumbnailCache

DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024
logger = logging.getLogger("photoseek")
_GUARDED = ("/api", "/healthz", "/docs", "/redoc", "/openapi.json")
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
    """The API over `engine`: the routes of servers/routes/, behind the checks every request passes.

    `watch_folders`: indexed once at start, then kept current while the server runs (their changes
    become index jobs, listed with the others).

    `index_roots`, when given, are the only folders POST /api/index reads (their real paths; a symbolic
    link out of them is not followed); with `serve_only_under_roots`, images are served only from them
    too. Requests must name this machine in their Host header (loopback names, plus `allowed_hosts`),
    and a browser's Origin must be one of those: another site cannot reach the API through the user's
    browser, by DNS rebinding or a cross-site form.
    """
    roots = [os.path.realpath(r) for r in index_roots or []]
    hosts = {h.lower().strip("[]") for h in (*LOOPBACK_NAMES, *allowed_hosts)}
    jobs = IndexJobs(engine, within=roots)
    context = ServerContext(engine=engine, jobs=jobs, index_roots=roots, serve_roots=roots if serve_only_under_roots else [],
                            thumbnails=ThumbnailCache(thumbnail_dir or default_thumbnail_dir(engine.store.location)),
                            max_upload_bytes=max_upload_bytes)

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
    app.state.context, app.state.engine, app.state.jobs = context, engine, jobs

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

    for router in ROUTERS:
        app.include_router(router)
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
