"""Optional parts installed as extras (`pip install 'photoseek[serve]'`): a clear error naming the
extra when one is missing, instead of an ImportError from deep inside."""

from __future__ import annotations

import importlib.util

from photoseek.errors import MissingDependencyError

# import name -> the extra that installs it
EXTRA_OF = {
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve",
    "transformers": "multilingual", "sentence_transformers": "multilingual",
    "cn_clip": "cn-clip",
    "ray": "ray", "pyarrow": "ray",
    "rawpy": "raw",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(purpose: str, *modules: str) -> None:
    """Raise MissingDependencyError naming the extra when any of `modules` cannot be imported."""
    missing = [m for m in modules if not _installed(m)]
    if missing:
        extras = sorted({EXTRA_OF.get(m, m) for m in missing})
        raise MissingDependencyError(
            f"{purpose} needs {', '.join(missing)}, which this installation lacks: "
            f"pip install 'photoseek[{','.join(extras)}]' (or pip install -r requirements.txt in a checkout)")
