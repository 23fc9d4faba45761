"""Train `shapes-tiny::v1`, the small bilingual CLIP that the tests use (no weights can be
downloaded on our machines, so the project makes its own).

    python tools/train_test_model.py [--out photoseek/models/shapes-tiny-v1] [--steps 2560]

open_clip's own architecture code with a tiny custom config, trained from scratch on scenes from
`make_scenes.py` with English and Chinese captions. Deterministic for a given seed, torch thread
count and CPU instruction set (not across them), which is why the weights are committed and CI
never retrains. About 12 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_scenes import Scene, captions, random_scene, render  # noqa: E402

MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 128, "head_width": 32, "patch_size": 16, "mlp_ratio": 2.0},
    # Chinese captions take up to ~56 BPE tokens with open_clip's byte-level tokenizer.
    "text_cfg": {"context_length": 64, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}
PREPROCESS_CFG = {"size": 64, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                  "interpolation": "bicubic", "resize_mode": "shortest"}
HELD_OUT_SEED = 20261129  # never used for training scenes


def build_model() -> tuple[Any, Any]:
    model: Any = open_clip.CLIP(**MODEL_CFG)  # type: ignore[arg-type]
    transform = open_clip.image_transform(64, is_train=False, mean=PREPROCESS_CFG["mean"], std=PREPROCESS_CFG["std"],
                                          interpolation="bicubic", resize_mode="shortest")
    return model, transform


def render_set(scenes: list[Scene], transform) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.stack([transform(render(s)) for s in scenes]).to(torch.float16)


def recall(model: Any, images: torch.Tensor, texts: list[str], tokenizer) -> dict[str, float]:  # type: ignore[no-untyped-def]
    model.eval()
    with torch.inference_mode():
        img = F.normalize(model.encode_image(images.float()), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    ranks = (txt @ img.T).argsort(dim=1, descending=True)
    target = torch.arange(len(texts)).unsqueeze(1)
    hit_rank = (ranks == target).float().argmax(dim=1)
    model.train()
    return {f"R@{k}": round(float((hit_rank < k).float().mean()), 3) for k in (1, 5, 10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "photoseek" / "models" / "shapes-tiny-v1")
    parser.add_argument("--steps", type=int, default=2560)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--train-scenes", type=int, default=30000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    model, transform = build_model()
    tokenizer: Any = open_clip.get_tokenizer("ViT-B-32", context_length=MODEL_CFG["text_cfg"]["context_length"])

    started = time.time()
    train_scenes = [random_scene(rng) for _ in range(args.train_scenes)]
    train_images = render_set(train_scenes, transform)
    train_captions = [captions(s) for s in train_scenes]
    held_rng = random.Random(HELD_OUT_SEED)
    held_scenes = [random_scene(held_rng) for _ in range(500)]
    held_images = render_set(held_scenes, transform)
    print(f"rendered {len(train_scenes)} training scenes in {time.time() - started:.0f}s", flush=True)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98))
    warmup = 100

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    used_tokens: set[int] = set()
    model.train()
    for step in range(args.steps):
        batch = rng.sample(range(len(train_scenes)), args.batch)
        texts = [rng.choice(train_captions[i][rng.choice(("en", "zh"))]) for i in batch]
        tokens = tokenizer(texts)
        used_tokens.update(torch.unique(tokens).tolist())
        image_features, text_features, logit_scale = model(train_images[batch].float(), tokens)[:3]
        logits = logit_scale * image_features @ text_features.T
        labels = torch.arange(args.batch)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 256 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} {time.time() - started:.0f}s", flush=True)

    # Every token any caption can produce, so that zeroing the rest changes no trained output.
    for caps in train_captions:
        for phrasing in caps["en"] + caps["zh"]:
            used_tokens.update(tokenizer([phrasing])[0].tolist())
    with torch.no_grad():
        unused = torch.ones(model.token_embedding.weight.shape[0], dtype=torch.bool)
        unused[sorted(used_tokens)] = False
        model.token_embedding.weight[unused] = 0

    metrics = {lang: recall(model, held_images, [captions(s)[lang][0] for s in held_scenes], tokenizer) for lang in ("en", "zh")}
    print(json.dumps(metrics), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "open_clip_model.safetensors"))
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    (args.out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    card = {"name": "shapes-tiny::v1", "steps": args.steps, "batch": args.batch, "seed": args.seed,
            "threads": args.threads, "held_out_seed": HELD_OUT_SEED, "held_out_recall": metrics,
            "torch": torch.__version__, "open_clip": open_clip.__version__, "numpy": np.__version__,
            "train_seconds": round(time.time() - started)}
    (args.out / "training.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
