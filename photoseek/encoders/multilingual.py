"""Queries in any language against collections built with English-only CLIP models, without re-indexing.

M-CLIP's text encoders (XLM-RoBERTa + a linear map, distilled into OpenAI CLIP image spaces) and
sentence-transformers' clip-ViT-B-32-multilingual-v1 produce vectors in the image space of a known
open_clip model. `QueryRouter` sends each query to such an encoder when the collection's model
cannot read its script, and to the model's own text tower otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from photoseek.errors import InvalidArgumentError, ModelLoadError
from photoseek.extras import require

logger = logging.getLogger("photoseek")

# Image space → multilingual text encoder distilled into it (Hugging Face ids, as the authors publish them).
QUERY_ENCODERS: dict[str, str] = {
    "ViT-B-32::openai": "M-CLIP/XLM-Roberta-Large-Vit-B-32",
    "ViT-L-14::openai": "M-CLIP/XLM-Roberta-Large-Vit-L-14",
    "ViT-B-16-plus-240::laion400m_e32": "M-CLIP/XLM-Roberta-Large-Vit-B-16Plus",
}
ALTERNATIVE_QUERY_ENCODERS = {"ViT-B-32::openai": ["sentence-transformers/clip-ViT-B-32-multilingual-v1"]}
# Models whose own text tower reads more than Latin script.
_MULTILINGUAL_MARKERS = ("xlm-roberta", "nllb", "mt5", "CN-CLIP", "chinese", "multilingual")
MULTILINGUAL_MODELS = {"shapes-tiny::v1"}  # trained on English and Chinese captions


def reads_any_script(model_name: str) -> bool:
    return model_name in MULTILINGUAL_MODELS or any(m.lower() in model_name.lower() for m in _MULTILINGUAL_MARKERS)


def needs_multilingual(text: str) -> bool:
    """True when `text` has a letter outside the Latin script (CJK, Cyrillic, Arabic, ...)."""
    for char in text:
        if char.isalpha() and "LATIN" not in unicodedata.name(char, ""):
            return True
    return False


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _resolve_folder(name: str) -> Path:
    """A local folder, or the Hugging Face snapshot of a repo id (downloaded on first use)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder.resolve()
    from huggingface_hub import snapshot_download

    from photoseek.encoders.base import hub_reachable

    hint = "Without network, copy it into the Hugging Face cache (HF_HOME) or pass a local folder with --query-model."
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
        raise ModelLoadError(f"could not load query encoder {name!r}: not in the Hugging Face cache and the hub is unreachable. {hint}")
    try:
        return Path(snapshot_download(name))
    except Exception as error:
        raise ModelLoadError(
            f"could not load query encoder {name!r}: {error.__class__.__name__}: {str(error).splitlines()[0][:200]}. {hint}"
        ) from error


class MCLIPTextEncoder:
    """M-CLIP: a transformers text model, mean pooling over real tokens, one linear map."""

    def __init__(self, name: str, folder: Path, device: str = "cpu"):
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        base = str(config.get("modelBase", "xlm-roberta-large"))
        base_path = folder / base if (folder / base).is_dir() else Path(base) if Path(base).is_dir() else None
        try:
            base_config = AutoConfig.from_pretrained(str(base_path or base))
        except Exception as error:
            raise ModelLoadError(f"query encoder {name!r}: cannot get the config of its base model {base!r}: {error}") from error
        self.transformer = AutoModel.from_config(base_config)
        in_dim = int(config.get("transformerDimensions", config.get("transformerDimSize", base_config.hidden_size)))
        self.dim = int(config.get("numDims", config.get("imageDimSize", 0)))
        self.projection = torch.nn.Linear(in_dim, self.dim)
        state = _load_state_dict(folder)
        transformer_state = {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")}
        missing, unexpected = self.transformer.load_state_dict(transformer_state, strict=False)
        missing = [k for k in missing if "position_ids" not in k]
        if missing:
            raise ModelLoadError(f"query encoder {name!r}: weights miss {len(missing)} tensors, e.g. {missing[:3]}")
        self.projection.load_state_dict({"weight": state["LinearTransformation.weight"], "bias": state["LinearTransformation.bias"]})
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.transformer.eval().to(device)
        self.projection.eval().to(device)
        self.device = device
        self.name = name
        self.max_length = min(int(getattr(base_config, "max_position_embeddings", 514)) - 2, 512)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.inference_mode():
            hidden = self.transformer(**tokens)[0]
            mask = tokens["attention_mask"].unsqueeze(2).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
            return self.projection(pooled).float().cpu().numpy()


class SentenceTransformerTextEncoder:
    """A sentence-transformers model whose output lives in a CLIP image space."""

    def __init__(self, name: str, folder: Path, device: str = "cpu"):
        require(f"query encoder {name!r}", "sentence_transformers")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), device=device)
        self.name = name
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension() or 0)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), convert_to_numpy=True), dtype=np.float32)


def _load_state_dict(folder: Path) -> dict[str, Any]:
    import torch

    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return dict(load_file(str(folder / "model.safetensors")))
    if (folder / "pytorch_model.bin").is_file():
        return dict(torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True))
    raise ModelLoadError(f"no model.safetensors or pytorch_model.bin in {folder}")


def load_text_encoder(name: str, device: str = "cpu") -> TextEncoder:
    require("multilingual query encoders", "transformers")
    folder = _resolve_folder(name)
    if (folder / "modules.json").is_file():
        return SentenceTransformerTextEncoder(name, folder, device)
    config_path = folder / "config.json"
    if config_path.is_file() and json.loads(config_path.read_text(encoding="utf-8")).get("model_type") == "M-CLIP":
        return MCLIPTextEncoder(name, folder, device)
    raise ModelLoadError(f"{name!r} is neither an M-CLIP model (config.json with model_type M-CLIP) nor a sentence-transformers model")


def planned_query_encoder(model_name: str, query_model: str) -> str | None:
    """The multilingual encoder that non-Latin queries against `model_name` go to, or None."""
    if query_model == "never" or (query_model == "auto" and reads_any_script(model_name)):
        return None
    return QUERY_ENCODERS.get(model_name) if query_model == "auto" else query_model


class QueryRouter:
    """Chooses, per query, the collection model's own text tower or a multilingual encoder.

    query_model: "auto" (the registered encoder for the model, used for non-Latin queries when the
    model reads only Latin script), "never" (always the model's tower), or the name/folder of an
    M-CLIP or sentence-transformers encoder (used for non-Latin queries).
    """

    def __init__(self, model_name: str, dim: int, query_model: str = "auto", device: str = "cpu",
                 loader: Callable[[str, str], TextEncoder] = load_text_encoder):
        if not query_model:
            raise InvalidArgumentError("query_model must be 'auto', 'never' or an encoder name")
        self.model_name, self.dim, self.mode, self.device = model_name, dim, query_model, device
        self._loader = loader
        self._encoder: TextEncoder | None = None
        self._unavailable = False

    @property
    def encoder_name(self) -> str | None:
        """The multilingual encoder this router would use, or None."""
        return planned_query_encoder(self.model_name, self.mode)

    def route(self, text: str) -> str | None:
        name = self.encoder_name
        return name if name and not self._unavailable and needs_multilingual(text) else None

    def _get(self, name: str) -> TextEncoder | None:
        if self._encoder is None:
            try:
                from photoseek.encoders.base import pick_device  # imports torch: only when a query needs this encoder

                encoder = self._loader(name, pick_device(self.device))
            except ModelLoadError as error:
                if self.mode != "auto":
                    raise
                self._unavailable = True
                warnings.warn(f"{error} Non-Latin queries go to {self.model_name}'s own text tower, "
                              "which reads little besides English.", stacklevel=3)
                return None
            if encoder.dim != self.dim:
                raise ModelLoadError(f"query encoder {name!r} gives {encoder.dim}-d vectors, the collection holds {self.dim}-d "
                                     f"({self.model_name}); choose an encoder made for that model")
            self._encoder = encoder
        return self._encoder

    def encode(self, texts: Sequence[str], own_tower: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, list[str]]:
        """Vectors for `texts` (not yet normalised) and, per text, the name of the encoder that answered."""
        routes = [self.route(t) for t in texts]
        labels = [self.model_name] * len(texts)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        foreign = [i for i, r in enumerate(routes) if r]
        encoder = self._get(routes[foreign[0]]) if foreign else None  # type: ignore[arg-type]
        if encoder is None:
            foreign = []
        if foreign:
            assert encoder is not None
            vectors[foreign] = encoder.encode([texts[i] for i in foreign])
            for i in foreign:
                labels[i] = encoder.name
        answered = set(foreign)
        native = [i for i in range(len(texts)) if i not in answered]
        if native:
            vectors[native] = own_tower([texts[i] for i in native])
        return vectors, labels
