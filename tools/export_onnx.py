"""Export an open_clip model to the ONNX layout clip-as-service's ONNX executor loads from `model_path`:
a folder with `textual.onnx` (inputs `input_ids`, `attention_mask`: int32 [N, 77]) and `visual.onnx`
(input `pixel_values`: float32 [N, 3, H, W]).

    python tools/export_onnx.py MODEL OUT_DIR      # MODEL as image_search names it (ARCH::TAG, folder, ...)

clip-server then serves it offline with `name: <the architecture's name>` and `model_path: OUT_DIR`
(see service/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class _Textual(torch.nn.Module):
    def __init__(self, model: Any):
        super().__init__()
        self.model: Any = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # clip-server feeds an attention mask; CLIP's causal text tower does not need it, but the
        # graph must keep the input, so it is used in a way that changes nothing.
        return self.model.encode_text(input_ids.long()) + 0.0 * attention_mask.sum().float()


def export(model_name: str, out_dir: Path) -> None:
    from clip_encoder import CLIPEncoder
    from photoseek.encoders.onnx_export import VisualTower

    encoder = CLIPEncoder(model_name=model_name, device="cpu", precision="fp32", runtime="torch")
    backend: Any = encoder.backend
    model = backend.model.float().eval()
    size = encoder.image_size
    context = int(model.context_length) if hasattr(model, "context_length") else 77
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = torch.zeros((2, context), dtype=torch.int32)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX export
    with torch.no_grad():
        torch.onnx.export(_Textual(model), (tokens, torch.ones_like(tokens)), str(out_dir / "textual.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["text_features"],
                          dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "text_features": {0: "batch"}},
                          opset_version=17, dynamo=False)
        torch.onnx.export(VisualTower(model), (torch.zeros((2, 3, size, size)),), str(out_dir / "visual.onnx"),
                          input_names=["pixel_values"], output_names=["image_features"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_features": {0: "batch"}},
                          opset_version=17, dynamo=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    export(args.model, args.out_dir)
    print(f"wrote {args.out_dir}/textual.onnx and visual.onnx")


if __name__ == "__main__":
    main()
