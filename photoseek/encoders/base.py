"""The encoder backend interface and the helpers every backend shares (a leaf: imports nothing of ours
but the errors).

A backend does two things: `prepare_image` turns a decoded RGB image into whatever its encoder
consumes (a tensor, or encoded bytes for a server); it runs in decode worker threads, ahead of the
model. `embed_images` / `embed_texts` turn a batch into raw vectors on the thread that owns the
device. Backends are registered by mode, as `module:Class` strings loaded on first use (so naming
a mode imports only that backend), or as factories through `register_backend`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from photoseek.errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "ViT-B-32::openai"
CN_CLIP_PREFIX = "CN-CLIP/"  # Chinese-CLIP models, named as clip-as-service names them (encoders/cn_clip.py)
PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Models that ship with the project, addressed by name like any other.
BUILTIN_MODELS: dict[str, Path] = {"shapes-tiny::v1": PACKAGE_DIR / "models" / "shapes-tiny-v1"}


class EncoderBackend(Protocol):
    """What a backend provides. Vectors it returns need not be normalised."""

    model_name: str
    dim: int
    image_size: int
    # How the model was built (activation, preprocessing...): recorded in the collection it fills,
    # so that vectors made another way can be recognised later. Empty when the backend cannot tell.
    build: dict[str, Any]
    # Batches an indexer may keep at the encoder at once: 1 in process; more for a remote server,
    # which would otherwise idle through every round trip.
    batches_in_flight: int

    def prepare_image(self, image: Image.Image) -> Any: ...

    def embed_images(self, prepared: Sequence[Any]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None: ...


BackendFactory = Callable[..., EncoderBackend]
# mode -> a factory, or "module:Class" imported when the mode is first used
BACKENDS: dict[str, BackendFactory | str] = {
    "local": "photoseek.encoders.open_clip_backend:OpenCLIPBackend",
    "local-onnx": "photoseek.encoders.onnx_backend:OnnxCLIPBackend",
    "local-cn-clip": "photoseek.encoders.cn_clip:ChineseCLIPBackend",
    "service": "photoseek.encoders.service:ServiceBackend",
}


def register_backend(mode: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a backend factory (a class) under `mode`, like a plugin."""
    def decorator(factory: BackendFactory) -> BackendFactory:
        BACKENDS[mode] = factory
        return factory

    return decorator


def backend_factory(mode: str) -> BackendFactory:
    entry = BACKENDS.get(mode)
    if entry is None:
        raise InvalidArgumentError(f"unknown encoder mode {mode!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    if isinstance(entry, str):
        import importlib

        module_name, _, class_name = entry.partition(":")
        factory: BackendFactory = getattr(importlib.import_module(module_name), class_name)
        BACKENDS[mode] = factory
        return factory
    return entry


MAX_TEXT_CHARS = 2048


def bounded_text(text: str) -> str:
    """A text as the text towers can read it, bounded before anything tokenizes it: CLIP reads at most 77 tokens
    (each at least a character, most a word), so a text is cut at MAX_TEXT_CHARS once its runs of spaces are
    collapsed; a 55 MB text had held a shared encoder 25 s."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return " ".join(text[: MAX_TEXT_CHARS * 4].split())[:MAX_TEXT_CHARS]


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r} requested but CUDA is not available on this machine")
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
RUNTIMES = ("auto", "onnx", "torch")


def cuda_probably_present() -> bool:
    """Whether an NVIDIA driver is loaded, without importing torch (which costs a second)."""
    return os.path.exists("/proc/driver/nvidia/version") and os.environ.get("CUDA_VISIBLE_DEVICES", "x") not in ("", "-1")


def choose_local_runtime(runtime: str | None, device: str | None, precision: str | None) -> str:
    """'onnx' or 'torch' for an open_clip model in this process.

    auto: ONNX Runtime on a CPU, which starts without torch and runs the towers faster than torch fp32
    (its image tower moves to torch bf16 on CPUs with native bf16 math, see OnnxCLIPBackend); torch on
    CUDA and for fp16.
    """
    runtime = runtime or "auto"
    if runtime not in RUNTIMES:
        raise InvalidArgumentError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime != "auto":
        return runtime
    if device and device not in ("auto", "cpu"):
        return "torch"
    if precision == "fp16":
        return "torch"
    if device in (None, "", "auto") and cuda_probably_present():
        return "torch"
    return "onnx"


def pick_precision(precision: str | None, device: str) -> str:
    """auto: fp16 on CUDA; bf16 on CPUs with native bf16 math (AVX512-BF16 or AMX), else fp32."""
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        raise InvalidArgumentError("int8 runs on the ONNX runtime only (--runtime onnx)")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can this machine open a connection to the Hugging Face hub (or $HF_ENDPOINT)?"""
    import socket
    from urllib.parse import urlparse

    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or url, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


class TorchBackend:
    """The image path every in-process torch CLIP shares: a model with a `.visual` tower cast for the
    precision policy, a preprocessing transform, batches stacked on the model's device.

    The image tower is where indexing spends its time; on a CPU the text tower stays fp32 (one query
    is cheap) so query vectors keep full precision. On CUDA the whole model takes the dtype.
    """

    model_name: str
    dim: int
    image_size: int
    build: dict[str, Any]
    batches_in_flight = 1

    def _set_model(self, model: torch.nn.Module, preprocess: Callable[[Image.Image], Any], device: str,
                   precision: str | None) -> None:
        import torch

        self.device = device
        self.precision = pick_precision(precision, device)
        self._image_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        model = model.eval()
        if device.startswith("cuda"):
            model = model.to(self._image_dtype)
        else:
            model.visual.to(self._image_dtype)
        self.model: Any = model
        self.preprocess = preprocess

    def _embed_image_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch)

    def prepare_image(self, image: Image.Image) -> Any:
        return self.preprocess(image)

    def embed_images(self, prepared: Sequence[Any]) -> np.ndarray:
        import torch

        batch = torch.stack(list(prepared)).to(self.device, self._image_dtype)
        with torch.inference_mode():
            return self._embed_image_batch(batch).float().cpu().numpy()

    def close(self) -> None:
        self.model = None
