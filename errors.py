"""One exception tree for the whole library. The CLI and the HTTP layer translate these into
messages and exit codes; nothing below them prints or exits."""

from __future__ import annotations


class ImageSearchError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidArgumentError(ImageSearchError, ValueError):
    """A caller passed a value we cannot use (empty query, top_k out of range, bad path...)."""


class ModelLoadError(ImageSearchError):
    """A model could not be resolved or its weights could not be loaded."""


class EncoderError(ImageSearchError):
    """The encoder failed while encoding (service down, bad response...)."""


class EncoderRejectedError(EncoderError):
    """The encoder answered but refused a batch (one of its items, usually): resend the items one by one."""


class StoreError(ImageSearchError):
    """The vector store failed or could not be reached."""


class StoreLockedError(StoreError):
    """The embedded Milvus Lite database is held by another process."""


class CollectionMismatchError(StoreError):
    """An existing collection was built with another model or dimension than the one in use."""


class ImageDecodeError(InvalidArgumentError):
    """A file or upload could not be turned into an image; `reason` says why in words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ModelFidelityWarning(UserWarning):
    """Vectors are (or would be) made differently from how the model's weights were trained: an index
    built with the wrong activation, or a checkpoint whose name suggests another architecture."""
