"""open_clip models on ONNX Runtime: the default local path on a CPU, and torch-free once exported.

The first use of a model exports its towers from open_clip (`onnx_export`, which needs torch) into the
user's cache, keyed by the model, its weights file, the activation, and the versions of open_clip,
torch, onnx and onnxruntime; every later process loads the ONNX files, our tokenizer and our numpy
transform, and never imports torch, torchvision or open_clip. Each tower's session is created on its
first use, so a text search never loads the image tower.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from photoseek.encoders.base import BUILTIN_MODELS, DEFAULT_MODEL, cpu_has_native_bf16
from photoseek.encoders.clip_tokenizer import CLIPTokenizer
from photoseek.encoders.preprocess import ImageTransform
from photoseek.errors import EncoderError, InvalidArgumentError, MissingDependencyError, ModelLoadError, UnsupportedForOnnx
from photoseek.paths import cache_root

ONNX_PRECISIONS = ("auto", "fp32", "int8", "bf16")


def auto_image_precision(allow_torch: bool) -> str:
    """What `auto` runs the image tower in, chosen by measurement (bench/onnx_precision.py, README Performance):
    torch bf16 on CPUs with native bf16 math (2.4x ONNX Runtime fp32 there, cosine 0.99995, recall unchanged),
    else ONNX Runtime fp32. int8 was faster than fp32 (1.24x) but lost held-out recall, so it is opt-in."""
    return "bf16" if allow_torch and cpu_has_native_bf16() else "fp32"
EXPORT_FORMAT = 4  # what the export folder holds; a change re-exports (4: file hashes recorded, no pickle)
SAMPLES = 16  # blocks of SAMPLE_BYTES read to check a file at each load
SAMPLE_BYTES = 64 * 1024
EXPORTER_PACKAGES = ("open_clip_torch", "torch", "onnx", "onnxruntime")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def _file_identity(path: Path) -> list[Any]:
    found = path.stat()
    return [str(path), found.st_size, found.st_mtime_ns]


def export_key(model_name: str, activation: str | None = None) -> dict[str, Any]:
    """Everything an export depends on, without importing torch or open_clip."""
    name = model_name.strip()
    weights: list[Any] = []
    folder = BUILTIN_MODELS.get(name) or (Path(name).expanduser() if Path(name).expanduser().is_dir() else None)
    if folder is not None:
        weights = [_file_identity(p) for p in sorted(folder.resolve().iterdir()) if p.is_file()]
    else:
        arch, _, tag = name.partition("::")
        checkpoint = Path(tag).expanduser()
        if checkpoint.is_file():
            weights = [_file_identity(checkpoint.resolve())]
        else:  # a pretrained tag: whichever Hugging Face cache open_clip will read it from
            weights = [os.environ.get("HF_HUB_CACHE") or os.path.join(
                os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")]
    return {"format": EXPORT_FORMAT, "model": name, "weights": weights, "activation": activation,
            "versions": {package: _version(package) for package in EXPORTER_PACKAGES}}


def export_folder(model_name: str, activation: str | None = None) -> tuple[Path, dict[str, Any]]:
    key = export_key(model_name, activation)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name.strip().rsplit("/", 1)[-1])[:60] or "model"
    return cache_root() / "onnx" / f"{slug}-{digest}", key


def sample_digest(path: Path) -> str:
    """A SHA-256 of SAMPLES blocks spread over the file (its first and last included): cheap enough for every
    load of a model of hundreds of MB, and it catches a damaged or swapped file; a flip between the samples is
    caught by the full hash, checked when a result is not finite."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as source:
        for index in range(SAMPLES):
            source.seek(max(0, (size - SAMPLE_BYTES) * index // (SAMPLES - 1)))
            digest.update(source.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _whole_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_export(folder: Path, meta: dict[str, Any], whole: bool = False) -> None:
    """Raises ModelLoadError naming the first file of the export that is not as written (size and sampled hash;
    `whole`: the hash of everything)."""
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelLoadError(f"the ONNX export at {folder} records no file hashes; delete that folder to export again")
    for name, record in files.items():
        path = folder / str(name)
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_size != int(record["size"]):
                raise ValueError("its size changed")
            if sample_digest(path) != record["sample_sha256"]:
                raise ValueError("its content changed")
            if whole and _whole_digest(path) != record["sha256"]:
                raise ValueError("its content changed")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{path} is not the file exported there ({error}); delete {folder} to export again") from None


def ensure_export(model_name: str, activation: str | None = None) -> Path:
    """The export folder for this model, exporting it first if needed (which imports torch, once)."""
    try:
        return _ensure_export(model_name, activation)
    except OSError as error:  # a cache folder this user cannot read or write, a full disk...
        raise ModelLoadError(f"cannot use the model cache at {cache_root()} for {model_name!r}: "
                             f"{error.strerror or error}{f' ({error.filename})' if error.filename else ''}; set "
                             "PHOTOSEEK_CACHE to a folder you can write, or use --runtime torch") from None


# Told once, before a model's first export (it takes tens of seconds and can look like a hang); the CLI prints it.
on_export: Callable[[str], None] | None = None
EXPORT_SECONDS = {"shapes-tiny": 5, "ViT-B-32": 30, "ViT-B-16": 45, "ViT-L-14": 120}  # measured on 2 cores (README)


def _ensure_export(model_name: str, activation: str | None) -> Path:
    folder, key = export_folder(model_name, activation)
    if (folder / "export.json").is_file():
        if _weights_unchanged(folder):
            return folder
        shutil.rmtree(folder)  # made from weights that are no longer those open_clip would load
    refused = folder.with_name(folder.name + ".unsupported")
    if refused.is_file():  # remembered, so that such a model does not pay for a failed export at every start
        raise UnsupportedForOnnx(refused.read_text(errors="replace").strip())
    try:
        from photoseek.encoders.onnx_export import export_model
    except ImportError as error:
        raise MissingDependencyError(f"exporting {model_name!r} to ONNX needs torch and open_clip ({error}); "
                                     "install photoseek with its default dependencies") from error
    if on_export is not None:
        arch = model_name.strip().partition("::")[0]
        expected = next((seconds for prefix, seconds in EXPORT_SECONDS.items() if arch.startswith(prefix)), None)
        on_export(f"preparing {model_name} for ONNX Runtime, once{f' (about {expected} s on 2 cores)' if expected else ''}: "
                  f"kept in {folder}")
    try:
        export_model(model_name, folder, activation=activation, key=key)
    except UnsupportedForOnnx as reason:
        refused.parent.mkdir(parents=True, exist_ok=True)
        refused.write_text(str(reason))
        raise
    return folder


def _weights_unchanged(folder: Path) -> bool:
    try:
        recorded = json.loads((folder / "export.json").read_text()).get("weights_files", [])
    except (OSError, ValueError):
        return True  # unreadable: the backend says so with the remedy
    for path, size, mtime_ns in recorded:
        try:
            found = os.stat(path)
        except OSError:
            return False
        if (found.st_size, found.st_mtime_ns) != (size, mtime_ns):
            return False
    return True


class OnnxCLIPBackend:
    """An exported open_clip model on ONNX Runtime's CPU provider.

    The text tower always runs here. The image tower does too in fp32 or int8; in bf16 (what `auto`
    picks on CPUs with native bf16 math, unless `onnx_only`) it runs on torch, built on the first
    batch of images, so that searching and unchanged index runs still never import torch.
    """

    batches_in_flight = 1

    def __init__(self, model_name: str | None = DEFAULT_MODEL, device: str | None = "auto", precision: str | None = "auto",
                 activation: str | None = None, threads: int | None = None, onnx_only: bool = False, **_: Any):
        if device not in (None, "", "auto", "cpu"):
            raise InvalidArgumentError(f"the ONNX runtime runs on the CPU, not {device!r}: use --runtime torch for it")
        precision = precision or "auto"
        allowed = ONNX_PRECISIONS[:-1] if onnx_only else ONNX_PRECISIONS
        if precision not in allowed:
            raise InvalidArgumentError(f"the ONNX runtime runs the image tower in {', '.join(allowed)}, not {precision!r}; "
                                       "use --runtime torch for bf16 or fp16")
        if activation not in (None, "gelu", "quick_gelu"):
            raise InvalidArgumentError(f"activation must be 'gelu' or 'quick_gelu', got {activation!r}")
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise MissingDependencyError("the ONNX runtime needs onnxruntime (pip install onnxruntime), or use --runtime torch") from error
        self.model_name = (model_name or DEFAULT_MODEL).strip()
        self.precision = auto_image_precision(not onnx_only) if precision == "auto" else precision
        self.runtime = "onnx" if self.precision != "bf16" else "onnx+torch-bf16-images"
        self.device = "cpu"
        self._activation = activation
        self._torch_images: Any = None
        self.folder = ensure_export(self.model_name, activation)
        try:
            self.meta: dict[str, Any] = json.loads((self.folder / "export.json").read_text())
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"the ONNX export at {self.folder} is unreadable ({error}); delete that folder to export again") from None
        verify_export(self.folder, self.meta)
        self.dim = int(self.meta["dim"])
        self.image_size = int(self.meta["image_size"])
        self.build: dict[str, Any] = dict(self.meta["build"])
        self._transform = ImageTransform.from_record(self.meta["transform"])
        self._threads = threads
        self._sessions: dict[str, Any] = {}
        self._tokenizer: CLIPTokenizer | None = None
        # servers call in from several threads: each lazy part is built once
        self._building = threading.Lock()

    def _session(self, tower: str) -> Any:
        session = self._sessions.get(tower)
        if session is not None:
            return session
        with self._building:
            return self._sessions.get(tower) or self._open_session(tower)

    def _open_session(self, tower: str) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self._threads:
            options.intra_op_num_threads = self._threads
        if tower == "image":
            # the image tower shares the cores with the decode threads: idle pool threads must sleep, not
            # spin, or they take the CPU the next batch is being decoded on
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        file = {"text": "textual.onnx", "image": "visual.int8.onnx" if self.precision == "int8" else "visual.onnx"}[tower]
        try:
            session = ort.InferenceSession(str(self.folder / file), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for a damaged file
            raise ModelLoadError(f"cannot load {self.folder / file} ({error}); delete {self.folder} to export again") from None
        self._sessions[tower] = session
        return session

    @property
    def tokenizer(self) -> CLIPTokenizer:
        if self._tokenizer is not None:
            return self._tokenizer
        with self._building:
            if self._tokenizer is None:
                self._tokenizer = self._load_tokenizer()
            return self._tokenizer

    def _load_tokenizer(self) -> CLIPTokenizer:
        record = self.meta["tokenizer"]
        return CLIPTokenizer(self.folder / "bpe_simple_vocab_16e6.txt.gz", int(record["context_length"]), record["clean"],
                             record.get("additional_special_tokens", ()))

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        return self._transform(image)

    def embed_images(self, prepared: Sequence[Any]) -> np.ndarray:
        pixels = np.ascontiguousarray(np.stack(list(prepared)), dtype=np.float32)
        if self.precision == "bf16":
            return self._embed_images_on_torch(pixels)
        return self._finite(np.asarray(self._session("image").run(None, {"pixels": pixels})[0], dtype=np.float32), "images")

    def _embed_images_on_torch(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with self._building:
            if self._torch_images is None:
                from photoseek.encoders.open_clip_backend import OpenCLIPBackend

                backend = OpenCLIPBackend(self.model_name, device="cpu", precision="bf16", activation=self._activation)
                if backend.build != self.build:
                    raise ModelLoadError(f"{self.model_name} builds differently now than when it was exported to "
                                         f"{self.folder}; delete that folder to export again")
                self._torch_images = backend
        with torch.inference_mode():
            batch = torch.from_numpy(pixels).to(torch.bfloat16)
            return self._torch_images.model.encode_image(batch).float().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts))
        if self.meta.get("text_trim_padding"):
            # causal tower pooled at the end-of-text token (the largest id): the padding after it changes nothing
            tokens = tokens[:, : int(tokens.argmax(axis=1).max()) + 1]
        return self._finite(np.asarray(self._session("text").run(None, {"tokens": tokens})[0], dtype=np.float32), "texts")

    def _finite(self, vectors: np.ndarray, what: str) -> np.ndarray:
        """The vectors, if every number is finite; else the export is checked whole (a damaged file raises
        ModelLoadError naming it), and what is left is the model's own failure."""
        if np.isfinite(vectors).all():
            return vectors
        verify_export(self.folder, self.meta, whole=True)
        raise EncoderError(f"{self.model_name} gave values that are not numbers for {len(vectors)} {what}; "
                           f"delete {self.folder} to export it again, or use --runtime torch")

    def close(self) -> None:
        self._sessions.clear()
        if self._torch_images is not None:
            self._torch_images.close()
            self._torch_images = None
