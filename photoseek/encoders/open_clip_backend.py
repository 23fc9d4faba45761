"""open_clip models in this process: model names resolved, built the way their weights were trained.

    ARCH::TAG            a pretrained tag open_clip lists (ViT-B-32::openai), weights from its usual sources
    ARCH::/path/file     a local checkpoint of that architecture
    /path/to/folder      an open_clip model folder (open_clip_config.json + weights)
    shapes-tiny::v1      a model shipped with the package
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photoseek.encoders.base import BUILTIN_MODELS, CN_CLIP_PREFIX, DEFAULT_MODEL, TorchBackend, hub_reachable, pick_device
from photoseek.errors import InvalidArgumentError, ModelFidelityWarning, ModelLoadError


@dataclass(frozen=True)
class ModelSpec:
    """How open_clip should build a model named by the user."""

    name: str  # as the user wrote it; recorded in the collection
    open_clip_name: str  # arch, or 'local-dir:...' / 'hf-hub:...'
    pretrained: str | None  # tag or checkpoint file, only with a bare arch
    # The activation the weights were trained with, when the name says it: a pretrained tag's own
    # record (open_clip lists `quick_gelu` per tag). None: whatever the architecture's config says.
    quick_gelu: bool | None = None


def resolve_model(name: str) -> ModelSpec:
    """Turn `ARCH::PRETRAINED`, a built-in name, a local folder or an hf-hub id into a ModelSpec."""
    import open_clip

    name = name.strip()
    if not name:
        raise InvalidArgumentError("model name is empty")
    if name in BUILTIN_MODELS:
        return ModelSpec(name, f"local-dir:{BUILTIN_MODELS[name]}", None)
    if name.startswith(("hf-hub:", "local-dir:")):
        return ModelSpec(name, name, None)
    if Path(name).expanduser().is_dir():
        folder = Path(name).expanduser().resolve()
        if not (folder / "open_clip_config.json").is_file():
            raise ModelLoadError(f"model folder {folder} has no open_clip_config.json (an open_clip 'local-dir' model is expected)")
        return ModelSpec(name, f"local-dir:{folder}", None)
    arch, sep, pretrained = name.partition("::")
    if not sep or not arch or not pretrained:
        raise InvalidArgumentError(
            f"model name {name!r} is not of the form ARCH::PRETRAINED (for example {DEFAULT_MODEL}), "
            "a built-in model, or a local model folder"
        )
    if arch not in open_clip.list_models():
        raise InvalidArgumentError(f"unknown model architecture {arch!r} in {name!r}; see open_clip.list_models()")
    checkpoint = Path(pretrained).expanduser()
    if checkpoint.is_file():
        _warn_if_checkpoint_looks_like_openai(arch, checkpoint)
        return ModelSpec(name, arch, str(checkpoint.resolve()))
    known_tags = [tag for model, tag in open_clip.list_pretrained() if model == arch]
    if pretrained not in known_tags:
        hint = f"known tags for {arch}: {', '.join(known_tags)}" if known_tags else f"open_clip knows no weights for {arch}"
        raise InvalidArgumentError(f"unknown pretrained weights {pretrained!r} for {arch} ({hint}), and no such file")
    # open_clip 3.x builds the architecture's own activation and only warns when the tag was trained
    # with another (OpenAI's weights: QuickGELU); the tag's record decides here.
    tag_config = open_clip.get_pretrained_cfg(arch, pretrained) or {}
    return ModelSpec(name, arch, pretrained, quick_gelu=bool(tag_config.get("quick_gelu", False)))


def architecture_quick_gelu(open_clip_name: str) -> bool:
    """Whether an open_clip architecture (or local-dir:/hf-hub: config) is built with QuickGELU by itself."""
    import open_clip

    try:
        config = open_clip.get_model_config(open_clip_name) or {}
    except Exception:  # an hf-hub config that cannot be fetched: the loader will say so
        return False
    return bool(config.get("quick_gelu", False))


def trained_activation(name: str) -> str | None:
    """'quick_gelu' or 'gelu' when a model name's pretrained tag says how its weights were trained, else None
    (built-ins, folders, checkpoint files and Chinese-CLIP names carry their architecture themselves)."""
    arch, sep, tag = name.strip().partition("::")
    if not sep or name.strip() in BUILTIN_MODELS or Path(tag).expanduser().is_file() or name.startswith(CN_CLIP_PREFIX):
        return None
    try:
        spec = resolve_model(name)
    except InvalidArgumentError:
        return None
    if spec.quick_gelu is None:
        return None
    return "quick_gelu" if spec.quick_gelu else "gelu"


def _warn_if_checkpoint_looks_like_openai(arch: str, checkpoint: Path) -> None:
    """OpenAI's CLIP weights need QuickGELU; a file named like them under a GELU architecture is most likely a mistake."""
    import open_clip

    twin = f"{arch}-quickgelu"
    if "openai" in checkpoint.name.lower() and not architecture_quick_gelu(arch) and twin in open_clip.list_models():
        import warnings

        warnings.warn(
            f"{checkpoint} is named like OpenAI's weights, which were trained with QuickGELU, but {arch} is built with GELU; "
            f"if these are OpenAI's weights, name the architecture {twin}::{checkpoint} (vectors differ otherwise)",
            ModelFidelityWarning, stacklevel=3)


class OpenCLIPBackend(TorchBackend):
    """open_clip in this process, on CPU or CUDA."""

    def __init__(self, model_name: str | None = DEFAULT_MODEL, device: str | None = "auto", precision: str = "auto",
                 activation: str | None = None, **_: Any):
        """`activation` ('gelu' / 'quick_gelu') overrides what the name implies: only to keep filling or
        searching a collection whose vectors were made that way."""
        import open_clip

        self.spec = resolve_model(model_name or DEFAULT_MODEL)
        self.model_name = self.spec.name
        device = pick_device(device)
        if self.spec.open_clip_name.startswith("local-dir:"):
            folder = Path(self.spec.open_clip_name.removeprefix("local-dir:"))
            if not any(folder.glob("open_clip_*model*")) and not any(folder.glob("*.safetensors")):
                raise ModelLoadError(f"model folder {folder} holds no weights file (open_clip_model.safetensors or open_clip_pytorch_model.bin)")
        _check_weights_reachable(self.spec)
        if activation not in (None, "gelu", "quick_gelu"):
            raise InvalidArgumentError(f"activation must be 'gelu' or 'quick_gelu', got {activation!r}")
        quick_gelu = self.spec.quick_gelu if activation is None else activation == "quick_gelu"
        # A model keyword overrides the architecture's config in both directions (force_quick_gelu only adds).
        overrides = {} if quick_gelu is None else {"quick_gelu": quick_gelu}
        try:
            with warnings.catch_warnings():
                # open_clip warns when activation and tag disagree; the choice above is deliberate either way
                warnings.filterwarnings("ignore", message="QuickGELU mismatch")
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.spec.open_clip_name, pretrained=self.spec.pretrained, device=device, **overrides
                )
        except Exception as error:  # open_clip raises a zoo of types for "could not fetch"
            raise ModelLoadError(_load_failure_message(self.spec, error)) from error
        self._set_model(model, preprocess, device, precision)
        self.build = build_record(model)
        self.tokenizer = open_clip.get_tokenizer(self.spec.open_clip_name)
        self.dim = int(model.text_projection.shape[1] if getattr(model, "text_projection", None) is not None else model.visual.output_dim)
        # open_clip's CLIP text tower is causal and pools at the end-of-text token, so the padding
        # after it cannot change the result: skipping it makes a short query ~10x cheaper.
        self._trim_padding = (isinstance(model, open_clip.CLIP) and getattr(model, "text_pool_type", "") == "argmax"
                              and getattr(model, "attn_mask", None) is not None and getattr(model, "cls_emb", None) is None)
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            if self._trim_padding:
                return _encode_text_without_padding(self.model, tokens).float().cpu().numpy()
            return self.model.encode_text(tokens).float().cpu().numpy()


def build_record(model: Any) -> dict[str, Any]:
    """What decides an open_clip model's vectors besides its weights: activation and image preprocessing."""
    from open_clip.transformer import QuickGELU

    quick = any(isinstance(module, QuickGELU) for module in model.modules())
    preprocess = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    record: dict[str, Any] = {"library": "open_clip", "activation": "quick_gelu" if quick else "gelu"}
    for key in ("size", "mean", "std", "interpolation", "resize_mode"):
        if key in preprocess:
            value = preprocess[key]
            record[key] = list(value) if isinstance(value, (tuple, list)) else value
    return record


def _encode_text_without_padding(model: Any, tokens: Any) -> Any:
    """`CLIP.encode_text` run only up to the last end-of-text token of the batch (same numbers, less work)."""
    import torch
    from open_clip.transformer import text_global_pool

    length = int(tokens.argmax(dim=-1).max()) + 1  # the end-of-text id is the largest in the vocabulary
    text = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is None:
        return x
    return model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection


def _check_weights_reachable(spec: ModelSpec) -> None:
    """Fail in seconds, not after minutes of retries, when weights are neither cached nor downloadable."""
    import open_clip

    if spec.pretrained is None or os.path.isfile(spec.pretrained):
        return
    source = open_clip.get_pretrained_cfg(spec.open_clip_name, spec.pretrained) or {}
    hub = source.get("hf_hub", "")
    if not hub:
        return  # a plain URL download: open_clip's own error is quick and clear enough
    from huggingface_hub import try_to_load_from_cache

    repo_id, filename = os.path.split(hub)  # "org/repo/" names the default file
    candidates = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if filename.endswith(".bin"):
        candidates.insert(0, filename[: -len(".bin")] + ".safetensors")
    if any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in candidates):
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
        raise ModelLoadError(_load_failure_message(spec, ConnectionError(f"weights {repo_id} are not cached and the hub is unreachable")))


def _load_failure_message(spec: ModelSpec, error: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return (
        f"could not load model {spec.name!r}: {error.__class__.__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}\n"
        f"The weights are fetched from open_clip's usual sources on first use{' (HF_HUB_OFFLINE=1 is set)' if offline else ''}; "
        "without network, copy them into the Hugging Face cache (HF_HOME) on this machine, or point at local weights: "
        f"--model {spec.name.partition('::')[0] or 'ARCH'}::/path/to/checkpoint.safetensors, or --model /path/to/open_clip-folder "
        "(open_clip_config.json + weights)."
    )
