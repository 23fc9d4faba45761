"""Where photoseek keeps things, and the settings it reads from the environment.

Settings are `PHOTOSEEK_<NAME>` variables; the `IMAGE_SEARCH_<NAME>` spelling of earlier versions is still
read. The index of an earlier version (~/.local/share/image_search) keeps being used where no new one exists.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

APP = "photoseek"
LEGACY = "image_search"


def setting(name: str) -> str | None:
    """$PHOTOSEEK_<name>, else the earlier $IMAGE_SEARCH_<name>; None when neither is set (or set empty)."""
    return os.environ.get(f"PHOTOSEEK_{name}") or os.environ.get(f"IMAGE_SEARCH_{name}") or None


def data_root() -> Path:
    """$PHOTOSEEK_HOME, else $XDG_DATA_HOME/photoseek, else ~/.local/share/photoseek (an earlier version's
    image_search folder there, when it holds an index and no photoseek one exists)."""
    home = setting("HOME")
    if home:
        return Path(home).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share"))
    current, legacy = base / APP, base / LEGACY
    if not (current / "milvus.db").exists() and (legacy / "milvus.db").exists():
        return legacy
    return current


def cache_root() -> Path:
    """$PHOTOSEEK_CACHE, else $XDG_CACHE_HOME/photoseek, else ~/.cache/photoseek (all of it can be rebuilt:
    model exports, thumbnails of a server's index, the local channel's socket)."""
    explicit = setting("CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / APP


def thumbnail_dir(store_location: str) -> Path:
    """Beside a Milvus Lite file; for a Milvus server, a folder per server in the user's cache
    (never a folder named after the URI's scheme in the current directory)."""
    if "://" not in store_location:
        return Path(store_location).parent / "thumbnails"
    return cache_root() / "thumbnails" / re.sub(r"[^A-Za-z0-9._-]+", "_", store_location).strip("_")
