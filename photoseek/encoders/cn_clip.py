"""Chinese-CLIP (OFA-Sys, the `cn_clip` package) in this process, named as clip-as-service names it.

    CN-CLIP/ViT-B-16   CN-CLIP/ViT-L-14   CN-CLIP/ViT-L-14-336   CN-CLIP/ViT-H-14   CN-CLIP/RN50
    CN-CLIP/ViT-B-16::/path/to/clip_cn_vit-b-16.pt        (a local checkpoint of that architecture)

Weights come from the Hugging Face hub (`OFA-Sys/chinese-clip-*`, the source cn_clip itself uses)
into the usual HF cache, so offline use works as for open_clip models: copy the cache, or name the
file. The model is built by cn_clip's own `create_model` from its bundled configs; its image
transform (a square resize, no crop) and tokenizer (Chinese BERT, 52 tokens) are cn_clip's.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from photoseek.encoders.base import CN_CLIP_PREFIX, TorchBackend, hub_reachable, pick_device
from photoseek.errors import InvalidArgumentError, ModelLoadError
from photoseek.extras import require

CONTEXT_LENGTH = 52  # what every Chinese-CLIP checkpoint was trained with
PAD_ID = 0  # "[PAD]" in cn_clip's BERT vocabulary


@dataclass(frozen=True)
class ChineseCLIPArch:
    repo: str  # Hugging Face repository with the released checkpoint
    filename: str
    structure: str  # cn_clip's "vision@text" config names
    image_size: int


CN_CLIP_MODELS = {
    "ViT-B-16": ChineseCLIPArch("OFA-Sys/chinese-clip-vit-base-patch16", "clip_cn_vit-b-16.pt",
                                "ViT-B-16@RoBERTa-wwm-ext-base-chinese", 224),
    "ViT-L-14": ChineseCLIPArch("OFA-Sys/chinese-clip-vit-large-patch14", "clip_cn_vit-l-14.pt",
                                "ViT-L-14@RoBERTa-wwm-ext-base-chinese", 224),
    "ViT-L-14-336": ChineseCLIPArch("OFA-Sys/chinese-clip-vit-large-patch14-336px", "clip_cn_vit-l-14-336.pt",
                                    "ViT-L-14-336@RoBERTa-wwm-ext-base-chinese", 336),
    "ViT-H-14": ChineseCLIPArch("OFA-Sys/chinese-clip-vit-huge-patch14", "clip_cn_vit-h-14.pt",
                                "ViT-H-14@RoBERTa-wwm-ext-large-chinese", 224),
    "RN50": ChineseCLIPArch("OFA-Sys/chinese-clip-rn50", "clip_cn_rn50.pt", "RN50@RBT3-chinese", 224),
}


def resolve_cn_clip(name: str) -> tuple[ChineseCLIPArch, str | None]:
    """`CN-CLIP/ARCH` or `CN-CLIP/ARCH::/path/file.pt` -> the architecture and a local checkpoint, if named."""
    arch_name, _, checkpoint = name.strip().removeprefix(CN_CLIP_PREFIX).partition("::")
    if arch_name not in CN_CLIP_MODELS:
        raise InvalidArgumentError(f"unknown Chinese-CLIP model {name!r}; known: "
                                   + ", ".join(CN_CLIP_PREFIX + known for known in CN_CLIP_MODELS))
    if checkpoint and not Path(checkpoint).expanduser().is_file():
        raise InvalidArgumentError(f"checkpoint {checkpoint!r} of {name!r} is not a file")
    return CN_CLIP_MODELS[arch_name], str(Path(checkpoint).expanduser().resolve()) if checkpoint else None


def _fetch(name: str, arch: ChineseCLIPArch) -> str:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(arch.repo, arch.filename)
    if isinstance(cached, str):
        return cached
    how = (f"without network, copy {arch.repo} into the Hugging Face cache (HF_HOME) on this machine, or name the file: "
           f"--model {name}::/path/to/{arch.filename}")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
        raise ModelLoadError(f"could not load model {name!r}: {arch.repo}/{arch.filename} is not cached and the hub is "
                             f"unreachable{' (HF_HUB_OFFLINE=1 is set)' if os.environ.get('HF_HUB_OFFLINE') == '1' else ''}; {how}")
    try:
        return str(hf_hub_download(arch.repo, arch.filename))
    except Exception as error:
        raise ModelLoadError(f"could not download {arch.repo}/{arch.filename} for {name!r}: {error}; {how}") from error


class ChineseCLIPBackend(TorchBackend):
    """Chinese-CLIP on CPU or CUDA, with the same precision policy as the open_clip backend."""

    def __init__(self, model_name: str | None = None, device: str | None = "auto", precision: str = "auto", **_: Any):
        import torch

        if not model_name:
            raise InvalidArgumentError("a Chinese-CLIP model name is needed, e.g. CN-CLIP/ViT-B-16")
        require(f"Chinese-CLIP model {model_name}", "cn_clip")
        from cn_clip.clip.utils import create_model, image_transform
        arch, checkpoint = resolve_cn_clip(model_name)
        self.model_name = model_name.strip()
        device = pick_device(device)
        path = checkpoint or _fetch(self.model_name, arch)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            with contextlib.redirect_stdout(io.StringIO()):  # cn_clip prints the configs it reads
                model = create_model(arch.structure, state if "state_dict" in state else {"state_dict": state})
        except Exception as error:
            raise ModelLoadError(f"could not load {self.model_name!r} from {path}: {error.__class__.__name__}: "
                                 f"{str(error).splitlines()[0][:300] if str(error) else ''}") from error
        # the same precision policy as open_clip models (cn_clip itself runs fp16 on CUDA too)
        self._set_model(model.float().to(device), image_transform(arch.image_size), device, precision)
        self.image_size = arch.image_size
        self.dim = int(model.text_projection.shape[1])
        # cn_clip builds each architecture as released (its own activation, square resize, OpenAI mean/std)
        self.build: dict[str, Any] = {"library": "cn_clip", "structure": arch.structure, "size": arch.image_size}

    def _embed_image_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.visual(batch)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch
        from cn_clip.clip import tokenize

        tokens = tokenize(list(texts), context_length=CONTEXT_LENGTH).to(self.device)
        # BERT attends only to unmasked tokens, so the padding after the longest text changes nothing
        tokens = tokens[:, : max(1, int(tokens.ne(PAD_ID).sum(dim=1).max()))]
        with torch.inference_mode():
            # CLIP.encode_text, in the text tower's own dtype (it casts to the image tower's otherwise)
            hidden = self.model.bert(tokens, attention_mask=tokens.ne(PAD_ID).to(self.model.text_projection.dtype))[0]
            return (hidden[:, 0, :] @ self.model.text_projection).float().cpu().numpy()
