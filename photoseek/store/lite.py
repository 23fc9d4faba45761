"""Milvus Lite: where the per-user database lives, how a store is named, who holds a database's lock, and the
noise its in-process server makes."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from photoseek.errors import InvalidArgumentError

lite_users: dict[str, int] = {}  # open MilvusStores per Lite database in this process


LITE_PAGE_ROWS = 16_384  # the largest page a query iterator takes: fewer pages, fewer walks over Lite's rows


def default_lite_path() -> Path:
    """The per-user embedded database: milvus.db in photoseek's data folder (see photoseek/paths.py)."""
    from photoseek.paths import data_root

    return data_root() / "milvus.db"


def resolve_uri(uri: str | None = None, host: str | None = None, port: str | int | None = None) -> str:
    """A Milvus URI from the ways users name a store: a URI, host/port, $PHOTOSEEK_MILVUS_URI, or the default file."""
    if uri and (host or port):
        raise InvalidArgumentError("give either a Milvus URI or a host/port, not both")
    if host or port:
        return f"http://{host or 'localhost'}:{port or 19530}"
    from photoseek.paths import setting

    uri = uri or setting("MILVUS_URI") or str(default_lite_path())
    if is_lite_uri(uri):
        path = Path(uri).expanduser().resolve()
        if path.suffix != ".db":
            raise InvalidArgumentError(f"a Milvus Lite database path must end in .db, got {uri!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)
    return uri


def is_lite_uri(uri: str) -> bool:
    return "://" not in uri


class _LiteAllocTimestampFilter(logging.Filter):
    """pymilvus 3.x asks for AllocTimestamp, which Milvus Lite's in-process gRPC server does not implement;
    pymilvus copes, but grpc logs the NotImplementedError with a traceback on stderr. Only that is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], NotImplementedError):
            import traceback

            return "AllocTimestamp" not in "".join(traceback.format_tb(record.exc_info[2]))
        return True


def silence_lite_alloc_timestamp() -> None:
    grpc_server_logger = logging.getLogger("grpc._server")
    if not any(isinstance(f, _LiteAllocTimestampFilter) for f in grpc_server_logger.filters):
        grpc_server_logger.addFilter(_LiteAllocTimestampFilter())


@contextmanager
def quiet_pymilvus() -> Iterator[None]:
    pymilvus_logger = logging.getLogger("pymilvus")
    level = pymilvus_logger.level
    pymilvus_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        pymilvus_logger.setLevel(level)


def lite_lock_is_held(lite_path: str) -> bool:
    """Whether an open file holds the flock Milvus Lite takes on {database}/LOCK (no /proc needed, unlike
    `lock_holders`, so it also sees another user's or container's process). Tried without waiting, released at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock to try; Milvus Lite's own lock is the likeliest cause
        return True
    try:
        descriptor = os.open(os.path.join(lite_path, "LOCK"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)  # closing releases a lock this took
    return False


def lock_holders(lite_path: str) -> list[int]:
    """PIDs holding a Milvus Lite database's LOCK file open (Linux /proc; empty elsewhere)."""
    lock = os.path.join(lite_path, "LOCK")
    holders = []
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) == lock for fd in (entry / "fd").iterdir()):
                holders.append(int(entry.name))
        except OSError:
            continue
    return holders
