"""Reading an indexed file for a remote client: only the file that was indexed, never what a path now
leads to.

A request names an id; the index gives the path. Between indexing and the request, anyone who can
write in an indexed folder may have replaced the file (or a folder above it) with a symbolic link to
any other file, with the size and modification time copied (`touch -r`). So:

1. the path is resolved once (`realpath`); when the server has roots, the result must lie under one;
2. the resolved path is opened one component at a time with O_NOFOLLOW, so nothing swapped in after
   step 1 is followed;
3. the opened descriptor must be a regular file with the indexed size and mtime, and its content must
   hash to the fingerprint stored at index time (blake2b of the whole file, as the indexer computes
   it): the bytes served are the bytes that were indexed, whatever the path now points at.

Rows written before fingerprints existed (empty fingerprint) are served only when the stored path has
no symbolic link in it at all.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from typing import Any

from photoseek.errors import ImageSearchError

_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_DIRECTORY_FLAGS = _FLAGS | getattr(os, "O_DIRECTORY", 0)
# the file itself opens without blocking: a named pipe swapped in for a photo would otherwise hold the
# request's thread until a writer came (no effect on regular files; fstat then refuses the pipe)
_FILE_FLAGS = _FLAGS | getattr(os, "O_NONBLOCK", 0)
MAX_SERVED_BYTES = 512 * 1024 * 1024  # a file larger than this is not read into memory for a client


class FileNotServed(ImageSearchError):
    """The indexed file cannot be served; `status` is the HTTP status that says why (404 gone, 409 changed)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def under(path: str, roots: Sequence[str]) -> bool:
    """Whether the real path `path` is one of `roots` (real paths) or lies below one."""
    return any(path in (root, root.rstrip(os.sep)) or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def open_without_symlinks(path: str) -> int:
    """A descriptor of the absolute `path`, opened component by component, refusing any symbolic link."""
    if not os.path.isabs(path):
        raise FileNotServed(404, "the indexed path is not absolute")
    parts = [p for p in path.split(os.sep) if p]
    directory = os.open(os.sep, _DIRECTORY_FLAGS)
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIRECTORY_FLAGS, dir_fd=directory)
            os.close(directory)
            directory = child
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=directory)
    except OSError as error:
        raise FileNotServed(404, "the indexed file is gone or no longer a plain file on its indexed path; re-index its folder") \
            from error
    finally:
        os.close(directory)


def unchanged_on_disk(record: dict[str, Any]) -> bool:
    """A cheap check (one stat) that the indexed path still has the indexed size and mtime. Not a guarantee
    of content, so only for answering with something already derived from verified content."""
    try:
        info = os.stat(str(record["path"]))
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == int(record["size"]) and abs(info.st_mtime - float(record["mtime"])) <= 1e-6


def read_indexed_file(record: dict[str, Any], roots: Sequence[str] = ()) -> bytes:
    """The content of the indexed file `record` (path, size, mtime, fingerprint), verified as described above."""
    path = str(record["path"])
    fingerprint = str(record.get("fingerprint") or "")
    if not 2 <= len(fingerprint) <= 128 or len(fingerprint) % 2:  # not one of ours: as if none
        fingerprint = ""
    real = os.path.realpath(path)
    if roots and not under(real, roots):
        raise FileNotServed(404, "the indexed file is not under the folders this server serves")
    if not fingerprint and real != os.path.abspath(path):
        raise FileNotServed(409, "the indexed path now goes through a symbolic link; re-index its folder")
    descriptor = open_without_symlinks(real)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise FileNotServed(404, "the indexed path is no longer a plain file; re-index its folder")
        if info.st_size != int(record["size"]) or abs(info.st_mtime - float(record["mtime"])) > 1e-6:
            raise FileNotServed(409, "the file changed since it was indexed; re-index its folder")
        if info.st_size > MAX_SERVED_BYTES:
            raise FileNotServed(409, f"the file is larger than {MAX_SERVED_BYTES // (1024 * 1024)} MB")
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            data = handle.read(info.st_size + 1)
    finally:
        os.close(descriptor)
    if len(data) != int(record["size"]):
        raise FileNotServed(409, "the file changed since it was indexed; re-index its folder")
    if fingerprint and hashlib.blake2b(data, digest_size=len(fingerprint) // 2).hexdigest() != fingerprint:
        raise FileNotServed(409, "the file's content is not what was indexed; re-index its folder")
    return data
