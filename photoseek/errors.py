"""One exception tree for the whole library. The CLI and the HTTP layer translate these into
messages and exit codes; nothing below them prints or exits.

    ImageSearchError
    ├── InvalidArgumentError (also a ValueError)   a value we cannot use: empty query, bad top_k, path...
    │   └── ImageDecodeError                         a file or upload is not a usable image (`reason`)
    ├── ModelLoadError                             a model name could not be resolved or its weights loaded
    │   └── UnsupportedForOnnx                       this model cannot run on ONNX Runtime here (it keeps torch)
    ├── EncoderError                               encoding failed: service down, bad answer...
    │   └── EncoderRejectedError                     the encoder refused a batch: resend its items one by one
    ├── StoreError                                 the vector store failed or could not be reached
    │   ├── StoreLockedError                         the Milvus Lite database is held by another process
    │   └── CollectionMismatchError                  the collection was built with another model / dimension
    │       └── ForeignCollectionError                 ... or not by photoseek at all
    ├── MissingDependencyError                     an optional part is not installed (names the extra)
    ├── IndexCancelled                             an index run was cancelled (what it stored is kept)
    ├── ServerStartError                           one of our servers could not start (a busy port...)
    └── RemoteServerError                          a running photoseek server answered with an error

Warnings (through `warnings`, never printed by the library):

    EmptyIndexWarning       a search ran against a collection that does not exist or holds no images
    ModelFidelityWarning    vectors made differently from how the weights were trained
    EncoderServerWarning    one of several CLIP servers is not answering; the others carry the work
    TextMatchUnavailableWarning  text_match="on", but the store has no full-text search (a Milvus server before 2.5)
"""

from __future__ import annotations


class ImageSearchError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidArgumentError(ImageSearchError, ValueError):
    """A caller passed a value we cannot use (empty query, top_k out of range, bad path...)."""


class ImageDecodeError(InvalidArgumentError):
    """A file or upload could not be turned into an image; `reason` says why in words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ModelLoadError(ImageSearchError):
    """A model could not be resolved or its weights could not be loaded."""


class UnsupportedForOnnx(ModelLoadError):
    """This model's tokenizer or towers have no torch-free path here; it keeps running on torch."""


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


class MissingDependencyError(ImageSearchError):
    """An optional part (an extra such as `photoseek[serve]`) is not installed."""


class IndexCancelled(ImageSearchError):
    """An index run was cancelled by its caller; the batches it stored before are kept."""


class ForeignCollectionError(CollectionMismatchError):
    """The collection exists but photoseek did not create it (it records no model)."""


class ServerStartError(ImageSearchError):
    """One of our servers (HTTP API, encoder server) could not start: its port is busy or cannot be bound."""


class RemoteServerError(ImageSearchError):
    """A running photoseek server, used through its API, answered with an error of its own."""


class EmptyIndexWarning(UserWarning):
    """A search ran against a collection that does not exist or holds no images."""


class TextMatchUnavailableWarning(UserWarning):
    """Words were asked to match descriptions and file names (text_match="on"), but the store cannot."""


class ModelFidelityWarning(UserWarning):
    """Vectors are (or would be) made differently from how the model's weights were trained: an index
    built with the wrong activation, or a checkpoint whose name suggests another architecture."""


class EncoderServerWarning(UserWarning):
    """One of several CLIP servers is not answering (or serves something else); the others carry on."""


def warn_caller(message: str, category: type[Warning]) -> None:
    """Warn at the first line outside this package: the user's own call, however deep inside the package the
    warning arises (no counted stack levels to keep in step with the code)."""
    import os
    import sys
    import types  # noqa: F401 (the annotation below)
    import warnings

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 2, sys._getframe(1)  # type: int, types.FrameType | None
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
