"""Where image_search keeps what it can rebuild: model exports, thumbnails of a remote index."""

from __future__ import annotations

import os
import re
from pathlib import Path


def cache_root() -> Path:
    """$IMAGE_SEARCH_CACHE, else $XDG_CACHE_HOME/image_search, else ~/.cache/image_search."""
    explicit = os.environ.get("IMAGE_SEARCH_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "image_search"


def thumbnail_dir(store_location: str) -> Path:
    """Beside a Milvus Lite file; for a Milvus server, a folder per server in the user's cache
    (never a folder named after the URI's scheme in the current directory)."""
    if "://" not in store_location:
        return Path(store_location).parent / "thumbnails"
    return cache_root() / "thumbnails" / re.sub(r"[^A-Za-z0-9._-]+", "_", store_location).strip("_")
