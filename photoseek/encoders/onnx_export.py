"""Export an open_clip model's two towers to ONNX, verify them against the torch forward, and write the
folder `onnx_backend` runs from (the only module of the ONNX path that imports torch and open_clip).

    visual.onnx       pixels float32 [N, 3, H, W] -> image features [N, D]      (dynamic N)
    visual.int8.onnx  the same, weights quantised to int8 (ONNX Runtime's dynamic quantisation)
    textual.onnx      token ids int64 [N, L] -> text features [N, D]             (dynamic N; L too when
                      the text tower is causal and pools at the end-of-text token, so padding can be cut)
    bpe_simple_vocab_16e6.txt.gz, export.json (how to tokenise, preprocess; the build record; checks)

The export is refused (ModelLoadError) unless the ONNX towers reproduce torch's: cosine >= 0.9999 per
vector in fp32, on synthetic photos-like images through our numpy transform and on sample queries
through our tokenizer, both also compared with open_clip's own transform and tokenizer.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from photoseek.encoders.clip_tokenizer import CLIPTokenizer
from photoseek.encoders.open_clip_backend import OpenCLIPBackend
from photoseek.encoders.preprocess import ImageTransform
from photoseek.errors import ModelLoadError, UnsupportedForOnnx

OPSET = 18
FP32_MIN_COSINE = 0.9999
SAMPLE_QUERIES = ("a cute cat", "一只可爱的猫咪", "a red circle on a blue background", "🐶 at the beach, 2019",
                  "Ünïcödé café", "x", " ".join(["long"] * 120))


class VisualTower(torch.nn.Module):
    def __init__(self, model: Any):
        super().__init__()
        self.model: Any = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class TextTower(torch.nn.Module):
    def __init__(self, model: Any, trim: bool):
        super().__init__()
        self.model: Any = model
        self.trim = trim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.trim:
            return self.model.encode_text(tokens)
        from open_clip.transformer import text_global_pool

        model = self.model
        length = tokens.shape[1]  # traced as a dynamic dimension: any length up to the context length
        x = model.token_embedding(tokens) + model.positional_embedding[:length]
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = text_global_pool(model.ln_final(x), tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        if model.text_projection is None:
            return x
        return model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection


def _tokenizer_record(tokenizer: Any) -> dict[str, Any]:
    from open_clip import tokenizer as oc_tokenizer

    if type(tokenizer) is not oc_tokenizer.SimpleTokenizer or tokenizer.reduction_fn is not None:
        raise UnsupportedForOnnx(f"its tokenizer ({type(tokenizer).__name__}) is not open_clip's CLIP BPE tokenizer")
    cleaners = {oc_tokenizer._clean_lower: "lower", oc_tokenizer._clean_whitespace: "whitespace",
                oc_tokenizer._clean_canonicalize: "canonicalize"}
    clean = cleaners.get(tokenizer.clean_fn)
    if clean is None:
        raise UnsupportedForOnnx("its tokenizer cleans text in a way the torch-free tokenizer does not know")
    special = [t for t in tokenizer.encoder if t.startswith("<") and tokenizer.encoder[t] >= tokenizer.sot_token_id]
    return {"kind": "clip_bpe", "context_length": int(tokenizer.context_length), "clean": clean,
            "additional_special_tokens": [t for t in special if t not in ("<start_of_text>", "<end_of_text>")]}


def sample_images(size: int = 320) -> list[Image.Image]:
    """Deterministic photo-like images (gradients, shapes, noise, odd aspect ratios) for the export checks."""
    rng = np.random.default_rng(20261130)
    images = []
    for index, (width, height) in enumerate([(size, size), (size * 3 // 2, size), (size, size * 2), (size // 2, size // 3)]):
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 127 // max(width + height, 1)], -1)
        noisy = np.clip(base + rng.normal(0, 12 + 10 * index, base.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(noisy)
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = int(rng.integers(0, width - 4)), int(rng.integers(0, height - 4))
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            draw.ellipse((x0, y0, x0 + width // 4, y0 + height // 4), fill=colour)
        images.append(image)
    return images


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _weights_beside(model_file: Path) -> None:
    """Move the weights into `<file>.data` next to the graph: ONNX Runtime then maps them from disk instead
    of copying them, so a session opens in half the time and rows of the token embedding a query never
    touches never become resident (a text search: 212 MB instead of 398 MB for ViT-B-32's text tower)."""
    import onnx

    model = onnx.load(str(model_file))
    model_file.unlink()
    onnx.save_model(model, str(model_file), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=model_file.name + ".data", size_threshold=1024)


def _pretrained_weights_files(backend: OpenCLIPBackend) -> list[list[Any]]:
    """For `ARCH::TAG`: the file open_clip loaded from its cache (path, size, mtime), so that an export
    made from other weights under the same name (another HF_HOME, a new revision) is never reused."""
    spec = backend.spec
    if spec.pretrained is None or os.path.isfile(spec.pretrained):
        return []  # built-ins, folders and checkpoint files are in the export key already
    import open_clip

    try:
        path = open_clip.download_pretrained(open_clip.get_pretrained_cfg(spec.open_clip_name, spec.pretrained) or {})
    except Exception:  # the weights loaded a moment ago; if the cache cannot say where, key on the name only
        return []
    if not path or not os.path.isfile(path):
        return []
    stat = os.stat(path)
    return [[os.path.realpath(path), stat.st_size, stat.st_mtime_ns]]


def file_record(path: Path) -> dict[str, Any]:
    """What export.json keeps of each file it writes: size, a hash of samples (checked at every load) and of the
    whole (checked when a result is not finite)."""
    from photoseek.encoders.onnx_backend import _whole_digest, sample_digest

    return {"size": path.stat().st_size, "sample_sha256": sample_digest(path), "sha256": _whole_digest(path)}


def export_model(model_name: str, target: Path, activation: str | None = None, key: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export `model_name` into `target` (written whole or not at all) and return its export.json."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from open_clip.tokenizer import default_bpe

    backend = OpenCLIPBackend(model_name, device="cpu", precision="fp32", activation=activation)
    model = backend.model.float().eval()
    tokenizer_record = _tokenizer_record(backend.tokenizer)
    transform = ImageTransform.from_record({**backend.build, "size": backend.build.get("size", backend.image_size)})
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        shutil.copyfile(default_bpe(), work / "bpe_simple_vocab_16e6.txt.gz")
        tokenizer = CLIPTokenizer(work / "bpe_simple_vocab_16e6.txt.gz", tokenizer_record["context_length"],
                                  tokenizer_record["clean"], tokenizer_record["additional_special_tokens"])
        images = sample_images()
        pixels = transform.batch(images)
        reference_pixels = torch.stack([backend.preprocess(image) for image in images]).numpy()
        tokens = tokenizer(list(SAMPLE_QUERIES))
        reference_tokens = backend.tokenizer(list(SAMPLE_QUERIES)).numpy()
        if not np.array_equal(tokens, reference_tokens):
            raise UnsupportedForOnnx("the torch-free tokenizer does not reproduce open_clip's for this model")
        height, width = transform.size
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX export
        try:
            with torch.inference_mode():
                torch_images = model.encode_image(torch.from_numpy(reference_pixels)).numpy()
                torch_texts = model.encode_text(torch.from_numpy(reference_tokens)).numpy()
            batch, length = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("length", min=2, max=tokenizer.context_length)
            trim = bool(backend._trim_padding)
            # torch.export-based exporter: the legacy tracer froze the text length into the attention's reshapes
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(VisualTower(model).eval(), (torch.zeros((2, 3, height, width)),), str(work / "visual.onnx"),
                                  input_names=["pixels"], output_names=["features"], dynamic_shapes={"pixels": {0: batch}},
                                  opset_version=OPSET, dynamo=True, external_data=False)
                sample_tokens = torch.from_numpy(reference_tokens[:2, :9] if trim else reference_tokens[:2]).clone()
                torch.onnx.export(TextTower(model, trim).eval(), (sample_tokens,), str(work / "textual.onnx"),
                                  input_names=["tokens"], output_names=["features"],
                                  dynamic_shapes={"tokens": {0: batch, 1: length} if trim else {0: batch}},
                                  opset_version=OPSET, dynamo=True, external_data=False)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)  # a global: give it back as found
        root_logger = logging.getLogger()
        level = root_logger.level
        root_logger.setLevel(logging.ERROR)  # the quantiser logs advice on the root logger
        try:
            quantize_dynamic(str(work / "visual.onnx"), str(work / "visual.int8.onnx"), weight_type=QuantType.QInt8)
        finally:
            root_logger.setLevel(level)

        for name in ("visual.onnx", "visual.int8.onnx", "textual.onnx"):
            _weights_beside(work / name)

        options = ort.SessionOptions()
        options.log_severity_level = 3
        visual = ort.InferenceSession(str(work / "visual.onnx"), options, providers=["CPUExecutionProvider"])
        visual_int8 = ort.InferenceSession(str(work / "visual.int8.onnx"), options, providers=["CPUExecutionProvider"])
        textual = ort.InferenceSession(str(work / "textual.onnx"), options, providers=["CPUExecutionProvider"])
        onnx_images = visual.run(None, {"pixels": pixels})[0]
        int8_images = visual_int8.run(None, {"pixels": pixels})[0]
        cut = int(tokens.argmax(axis=1).max()) + 1 if trim else tokens.shape[1]
        onnx_texts = textual.run(None, {"tokens": tokens[:, :cut]})[0]
        onnx_one_text = textual.run(None, {"tokens": tokens[:1, : int(tokens[0].argmax()) + 1 if trim else None]})[0]
        checks = {
            "image_cosine_min": float(_cosines(onnx_images, torch_images).min()),
            "text_cosine_min": float(min(_cosines(onnx_texts, torch_texts).min(), _cosines(onnx_one_text, torch_texts[:1]).min())),
            "int8_image_cosine_min": float(_cosines(int8_images, onnx_images).min()),
        }
        for name in ("image_cosine_min", "text_cosine_min"):
            if not checks[name] >= FP32_MIN_COSINE:
                raise ModelLoadError(f"the ONNX export of {model_name!r} does not reproduce the torch model "
                                     f"({name} {checks[name]:.6f} < {FP32_MIN_COSINE}); use --runtime torch")
        meta = {
            "format": 2,
            "model": backend.model_name,
            "dim": int(backend.dim),
            "image_size": int(backend.image_size),
            "transform": {"size": [height, width], "mean": list(transform.mean), "std": list(transform.std),
                          "interpolation": transform.interpolation, "resize_mode": transform.resize_mode,
                          "fill_color": transform.fill_color},
            "tokenizer": tokenizer_record,
            "text_trim_padding": trim,
            "build": backend.build,
            "checks": checks,
            "key": key or {},
            "weights_files": _pretrained_weights_files(backend),
            "files": {path.name: file_record(path) for path in sorted(work.iterdir()) if path.is_file()},
        }
        (work / "export.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        backend.close()
        try:
            os.replace(work, target)
        except OSError:  # another process finished the same export first: theirs is as good
            if not (target / "export.json").is_file():
                raise
            shutil.rmtree(work, ignore_errors=True)
        return meta
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
