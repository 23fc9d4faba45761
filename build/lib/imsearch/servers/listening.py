"""Running our ASGI apps: bind first, so that a busy port is a clear error, not uvicorn's silent exit 3."""

from __future__ import annotations

import socket
from typing import Any

from imsearch.errors import ServerStartError


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart must not wait out TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ServerStartError(f"cannot listen on {host}:{port}: {error.strerror or error} "
                               "(another server on that port? choose one with --port)") from None
    return sock


def run_app(app: Any, sock: socket.socket) -> None:
    """Serve `app` with uvicorn on a socket from `listening_socket` until interrupted; closes the socket."""
    import uvicorn

    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
