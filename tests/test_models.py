"""Model names and the real loading paths, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TEST_MODEL

from clip_encoder import CLIPEncoder
from photoseek.encoders.open_clip_backend import resolve_model
from photoseek.errors import InvalidArgumentError, ModelLoadError


def test_shipped_test_model_loads_by_name(test_encoder: CLIPEncoder) -> None:
    assert (test_encoder.model_name, test_encoder.dim, test_encoder.image_size) == (TEST_MODEL, 64, 64)
    vectors = test_encoder.encode_texts(["a red circle", "一个红色圆形"])
    assert vectors.shape == (2, 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_encoding_is_deterministic_and_batch_independent(test_encoder: CLIPEncoder, photos: dict[str, Path]) -> None:
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in list(photos.values())[:5]]
    together = test_encoder.encode_images(images)
    alone = np.stack([test_encoder.encode_images([im])[0] for im in images])
    assert np.allclose(together, alone, atol=1e-4)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)  # unit vectors, so scores are cosines


@pytest.mark.parametrize("name,message", [
    ("", "empty"),
    ("ViT-B-32", "ARCH::PRETRAINED"),
    ("NoSuchArch::openai", "unknown model architecture"),
    ("ViT-B-32::no-such-tag", "known tags for ViT-B-32: .*openai"),
])
def test_bad_model_names_are_clear(name: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        resolve_model(name)


def test_model_folder_without_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "open_clip_config.json").write_text((ROOT / "photoseek/models/shapes-tiny-v1/open_clip_config.json").read_text())
    with pytest.raises(ModelLoadError, match="no weights"):
        CLIPEncoder(model_name=str(tmp_path), device="cpu")


def test_local_checkpoint_file_and_folder_give_the_same_vectors(tmp_path: Path, test_encoder: CLIPEncoder) -> None:
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(ROOT / "photoseek/models/shapes-tiny-v1", folder)
    from_folder = CLIPEncoder(model_name=str(folder), device="cpu")
    assert np.allclose(from_folder.encode_texts(["a blue star"]), test_encoder.encode_texts(["a blue star"]), atol=1e-6)


def test_text_encoding_without_padding_equals_open_clip(test_encoder: CLIPEncoder) -> None:
    import torch

    from photoseek.encoders.open_clip_backend import _encode_text_without_padding

    backend = test_encoder.backend
    tokens = backend.tokenizer(["a red circle", "一个大的红色圆形和一个小的蓝色星形", "x " * 200])
    with torch.inference_mode():
        full = backend.model.encode_text(tokens)
        trimmed = _encode_text_without_padding(backend.model, tokens)
    assert backend._trim_padding
    assert torch.allclose(full, trimmed, atol=1e-5)


def test_bf16_fast_path_keeps_embeddings_and_recall(photos: dict[str, Path], test_encoder: CLIPEncoder) -> None:
    from PIL import Image

    exact = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32")
    fast = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="bf16")
    images = [Image.open(p).convert("RGB") for p in photos.values()]
    exact_vectors, fast_vectors = exact.encode_images(images), fast.encode_images(images)
    assert np.allclose(np.linalg.norm(exact_vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(fast_vectors, axis=1), 1, atol=1e-5)
    cosines = (exact_vectors * fast_vectors).sum(axis=1)
    assert cosines.min() >= 0.9995, cosines  # measured ~0.9999 on these photos
    texts = ["a red circle", "一个小的蓝色星形"]
    assert np.allclose(exact.encode_texts(texts), fast.encode_texts(texts), atol=1e-6)  # text tower stays fp32
