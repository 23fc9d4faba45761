"""A disk cache of JPEG thumbnails for indexed images.

The cache folder is this user's own (made 0700); a thumbnail is read back only as a plain file of this user's,
opened without following a symbolic link, so a link planted under a thumbnail's predictable name (id and mtime
are in every search result) serves nothing and is removed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from photoseek.indexing.decode import load_rgb

MAX_THUMBNAIL_BYTES = 4 * 1024 * 1024


class ThumbnailCache:
    def __init__(self, folder: str | Path, size: int = 256, quality: int = 82):
        self.folder = Path(folder)
        with contextlib.suppress(FileExistsError):
            self.folder.mkdir(mode=0o700, parents=True)
        self.size = size
        self.quality = quality

    def path_for(self, image_id: int, mtime: float) -> Path:
        """Where the thumbnail of this version of the file is (or will be) kept; a changed file gets a new one."""
        return self.folder / f"{image_id}-{int(mtime * 1000)}-{self.size}.jpg"

    def read(self, image_id: int, mtime: float) -> bytes | None:
        """The cached thumbnail's bytes, if it is one this cache wrote (a plain file of this user's); else None, and
        anything else found under its name is removed."""
        path = self.path_for(image_id, mtime)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError:  # a symbolic link (ELOOP), or unreadable: not ours to serve
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_size > MAX_THUMBNAIL_BYTES:
                with contextlib.suppress(OSError):
                    path.unlink()
                return None
            return handle.read(MAX_THUMBNAIL_BYTES)

    def make(self, image_id: int, data: bytes, mtime: float, raw: bool = False) -> bytes:
        """Render the thumbnail of an indexed file's verified content (`raw`: a camera RAW file), keep it, return it."""
        import io

        image = load_rgb(data, min_side=self.size, raw=raw)
        image.thumbnail((self.size, self.size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality)
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".part")
        with os.fdopen(handle, "wb") as out:
            out.write(buffer.getvalue())
        os.replace(temporary, self.path_for(image_id, mtime))  # concurrent requests may both render; the last wins whole
        return buffer.getvalue()
