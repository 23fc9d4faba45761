"""Running our ASGI apps: bind first, so that a busy port is a clear error, not uvicorn's silent exit 3."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from photoseek.errors import ServerStartError


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP.
    # Without it, Nagle and the client's delayed ACK cost every request on a kept-alive connection 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart must not wait out TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ServerStartError(f"cannot listen on {host}:{port}: {error.strerror or error} "
                               "(another server on that port? choose one with --port)") from None
    return sock


HEADER_TIMEOUT_SECONDS = 10.0
SHUTDOWN_SECONDS = 1  # on SIGTERM or Ctrl-C: requests in flight get this long, then connections are closed


def header_timeout_protocol(seconds: float) -> type[Any]:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete `seconds` after it
    opened or after its last response (uvicorn times out idle keep-alive connections, not slow headers)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            waiting_for = self.cycle  # a new request replaces the cycle once its headers are complete

            def expire() -> None:
                if self.cycle is waiting_for and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(seconds, expire)

    return HeaderTimeoutProtocol


def run_app(app: Any, sock: socket.socket, header_timeout: float = HEADER_TIMEOUT_SECONDS,
            extra: Sequence[socket.socket] = ()) -> None:
    """Serve `app` with uvicorn on a socket from `listening_socket` (and `extra` listening sockets: the local
    channel's Unix socket) until interrupted (SIGINT or SIGTERM); closes the sockets. The caller's `finally`
    clauses run on either signal."""
    import uvicorn

    exit_cleanly_on_sigterm()
    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024,
                            http=header_timeout_protocol(header_timeout), timeout_graceful_shutdown=SHUTDOWN_SECONDS)
    try:
        uvicorn.Server(config).run(sockets=[sock, *extra])
    finally:
        for listener in (sock, *extra):
            listener.close()


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM an exit that runs `finally` clauses (from the main thread; elsewhere a no-op).

    uvicorn shuts down gracefully on SIGTERM, then raises the signal again for its previous handler: by
    default that kills the process before any cleanup. Servers call this before they leave anything to
    clean up (the advert file), so a SIGTERM that arrives while the model loads is an exit too."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(*_: object) -> None:
    raise SystemExit(143)
