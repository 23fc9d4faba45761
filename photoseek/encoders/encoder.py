"""CLIP encoders behind one small interface.

`CLIPEncoder` is what the rest of the project uses: it owns batching and L2 normalisation, and
delegates the model work to a backend chosen by mode ("local": open_clip in this process, or cn_clip
for `CN-CLIP/...` names; "service": a CLIP inference server). The backend interface
(`EncoderBackend`) and the registry (`register_backend`) live in `photoseek.encoders.base`, a leaf
that the backends import, so no backend imports this module. clip_encoder.py is its public face.

    >>> encoder = CLIPEncoder(mode="local", model_name="ViT-B-32::openai")
    >>> encoder.encode_texts(["a cat"]).shape
    (1, 512)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from photoseek.encoders.base import (
    BACKENDS,
    BUILTIN_MODELS,
    CN_CLIP_PREFIX,
    DEFAULT_MODEL,
    EncoderBackend,
    backend_factory,
    bounded_text,
    choose_local_runtime,
    normalize,
    register_backend,
)
from photoseek.errors import InvalidArgumentError, UnsupportedForOnnx

__all__ = ["CLIPEncoder", "EncoderBackend", "register_backend", "BACKENDS", "BUILTIN_MODELS", "DEFAULT_MODEL", "normalize"]

Item = TypeVar("Item")


class CLIPEncoder:
    """The project's encoder: pick a backend by mode, batch, normalise."""

    def __init__(self, mode: str = "local", model_name: str | None = DEFAULT_MODEL, batch_size: int = 32, **options: Any):
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be at least 1, got {batch_size}")
        runtime = options.pop("runtime", None)
        self.runtime_note = ""
        if mode == "local" and model_name and model_name.strip().startswith(CN_CLIP_PREFIX):
            mode = "local-cn-clip"  # Chinese-CLIP is not an open_clip model; it runs on torch
        elif mode == "local" and choose_local_runtime(runtime, options.get("device"), options.get("precision")) == "onnx":
            mode = "local-onnx"
            options["onnx_only"] = runtime == "onnx"
        self.mode = "local" if mode.startswith("local") else mode
        self.batch_size = batch_size
        try:
            self.backend: EncoderBackend = backend_factory(mode)(model_name=model_name, **options)
        except UnsupportedForOnnx as reason:
            if runtime == "onnx":
                raise
            # models ONNX cannot take here (their tokenizer has no torch-free twin) run on torch
            self.runtime_note = f"{model_name} runs on torch: {reason}"
            warnings.warn(self.runtime_note, stacklevel=2)
            options.pop("onnx_only", None)
            self.backend = backend_factory("local")(model_name=model_name, **options)

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    @property
    def runtime(self) -> str:
        """Where the model runs: 'onnx', 'torch', or 'service'."""
        return "service" if self.mode == "service" else str(getattr(self.backend, "runtime", "torch"))

    @property
    def dim(self) -> int:
        return self.backend.dim

    @property
    def image_size(self) -> int:
        return self.backend.image_size

    @property
    def build(self) -> dict[str, Any]:
        return self.backend.build

    @property
    def batches_in_flight(self) -> int:
        return max(1, int(self.backend.batches_in_flight))

    def prepare_image(self, image: Image.Image) -> Any:
        return self.backend.prepare_image(image)

    def encode_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        return self._batched(prepared, self.backend.embed_images)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_prepared([self.prepare_image(image) for image in images])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._batched([bounded_text(text) for text in texts], self.backend.embed_texts)

    def _batched(self, items: Sequence[Item], embed: Callable[[Sequence[Item]], np.ndarray]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [embed(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        return normalize(np.concatenate(chunks))

    def close(self) -> None:
        self.backend.close()
