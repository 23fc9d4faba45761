"""The CLI's way to a running `--mode serve` of the same collection: a Unix socket in a folder only this user can
open, trusted only when everything about it checks out.

The server (`--mode serve`) listens on its TCP port as ever and, for this user's CLI, on a Unix socket in a
private folder ($XDG_RUNTIME_DIR/photoseek, else the user cache's `run/`, mode 0700), named by a hash of its
store and collection, beside a note of what it serves (pid, store, collection, model). The CLI, before it opens
anything, looks for that socket and uses it only if:

- the folder, the note and the socket are this user's, not links, and no one else may write to them;
- the pid in the note is alive and, for Milvus Lite, holds the database's lock (Linux /proc): a server that
  serves this database, not a process that wrote a file;
- the note names this store and collection (and the model asked for, if one was);
- the server, asked over the socket, says it serves this store and collection.

Nothing else is trusted: no URL from a file is ever contacted, the token goes only over this socket, and a
planted note anywhere (the old `<db>.server.json` beside the database is no longer read) reaches nobody.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOTE_BYTES = 4096


@dataclass(frozen=True)
class Channel:
    socket_path: str
    pid: int
    model: str
    url: str  # the server's TCP address, for the user's information only (never contacted by the CLI)


def channel_folder(create: bool = False) -> Path | None:
    """The private folder, or None where it is not private (then no channel is used or offered)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and _private_folder(Path(runtime)):
        folder = Path(runtime) / "photoseek"
    else:
        from photoseek.paths import cache_root

        folder = cache_root() / "run"
    if create:
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700, parents=True)
    return folder if _private_folder(folder) else None


def _private_folder(path: Path) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def _own(path: Path, kind: int) -> bool:
    """This user's, of this kind (not a link), writable by no one else."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_IFMT(info.st_mode) == kind and info.st_uid == os.getuid() and not info.st_mode & 0o022


def _names(store: str, collection: str, folder: Path) -> tuple[Path, Path]:
    key = hashlib.blake2b(f"{store}\0{collection}".encode(), digest_size=12).hexdigest()
    return folder / f"{key}.sock", folder / f"{key}.json"


def open_channel(store: str, collection: str, model: str, url: str) -> tuple[socket.socket, Path, Path] | None:
    """Server side: a listening Unix socket for this store and collection, and its note; None where no private
    folder can be had (the server then runs without one: the CLI opens the store, or says it is in use)."""
    folder = channel_folder(create=True)
    if folder is None or not hasattr(socket, "AF_UNIX"):
        return None
    socket_path, note = _names(store, collection, folder)
    if len(str(socket_path).encode()) > 100:  # sun_path holds ~104 bytes
        return None
    with contextlib.suppress(FileNotFoundError):
        if _own(socket_path, stat.S_IFSOCK):
            socket_path.unlink()  # a socket left by a server that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_mask = os.umask(0o177)  # created 0600: no moment where another user could connect
        try:
            listener.bind(str(socket_path))
        finally:
            os.umask(old_mask)
        listener.listen(128)
    except OSError:
        listener.close()
        return None
    temporary = note.with_suffix(f".{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump({"pid": os.getpid(), "store": store, "collection": collection, "model": model, "url": url}, out)
    os.replace(temporary, note)
    return listener, socket_path, note


def close_channel(socket_path: Path, note: Path) -> None:
    """Server side, at exit: remove the socket and the note if they are still this process's."""
    try:
        if json.loads(note.read_text()).get("pid") == os.getpid():
            note.unlink()
            socket_path.unlink()
    except (OSError, ValueError):
        pass


def find_channel(store: str, collection: str, lite_path: str | None, model: str | None = None) -> Channel | None:
    """Client side: the channel to a server of this store and collection that passes every check, or None."""
    folder = channel_folder()
    if folder is None:
        return None
    socket_path, note = _names(store, collection, folder)
    if not (_own(note, stat.S_IFREG) and _own(socket_path, stat.S_IFSOCK)):
        return None
    try:
        descriptor = os.open(note, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as handle:
            advert = json.loads(handle.read(NOTE_BYTES))
        pid = int(advert["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(advert, dict) or advert.get("store") != store or advert.get("collection") != collection or pid <= 1:
        return None
    if model and advert.get("model") not in (None, model):
        return None
    if lite_path is not None and not holds_lite_lock(pid, lite_path):
        return None
    return Channel(str(socket_path), pid, str(advert.get("model") or ""), str(advert.get("url") or ""))


def holds_lite_lock(pid: int, lite_path: str) -> bool:
    """Whether process `pid` has the Milvus Lite database's LOCK file open (Linux /proc; elsewhere the folder's
    privacy is the only proof, so True)."""
    if not os.path.isdir("/proc"):
        return True
    lock = os.path.join(os.path.realpath(lite_path), "LOCK")
    try:
        return any(os.readlink(fd) == lock for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def serves(answer: Any, store: str, collection: str) -> bool:
    """Whether a server's stats (over the channel) say it serves this store and collection."""
    return isinstance(answer, dict) and answer.get("store") == store and answer.get("collection") == collection
