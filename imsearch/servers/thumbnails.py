"""A disk cache of JPEG thumbnails for indexed images."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from imsearch.indexing.decode import load_rgb


class ThumbnailCache:
    def __init__(self, folder: str | Path, size: int = 256, quality: int = 82):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.quality = quality

    def path_for(self, image_id: int, mtime: float) -> Path:
        """Where the thumbnail of this version of the file is (or will be) kept; a changed file gets a new one."""
        return self.folder / f"{image_id}-{int(mtime * 1000)}-{self.size}.jpg"

    def make(self, image_id: int, data: bytes, mtime: float, raw: bool = False) -> Path:
        """Render the thumbnail of an indexed file's verified content (`raw`: a camera RAW file)."""
        target = self.path_for(image_id, mtime)
        image = load_rgb(data, min_side=self.size, raw=raw)
        image.thumbnail((self.size, self.size))
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".part")
        with os.fdopen(handle, "wb") as out:
            image.save(out, format="JPEG", quality=self.quality)
        os.replace(temporary, target)  # concurrent requests may both render; the last rename wins whole
        return target
