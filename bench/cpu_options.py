"""The CPU fast-path candidates for the image tower, side by side: speed and agreement with fp32.

    python bench/cpu_options.py [--batch 32] [--repeats 3]

ViT-B-32 (random weights; compute is what counts) on real photographs from scikit-image, each
option's images/s at one batch size and its minimum embedding cosine against eager fp32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from indexing import random_vit_b_32  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import open_clip
    import skimage.data
    from PIL import Image

    model_dir = random_vit_b_32()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cat"]
    photos = [preprocess(Image.fromarray(getattr(skimage.data, n)()).convert("RGB")) for n in names]
    batch = torch.stack([photos[i % len(photos)] for i in range(args.batch)])
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(model.encode_image(batch), dim=-1).numpy()

    def measure(name: str, run: Callable[[], np.ndarray]) -> None:
        out = run()  # warm-up (and compilation)
        started = time.perf_counter()
        for _ in range(args.repeats):
            out = run()
        rate = args.batch * args.repeats / (time.perf_counter() - started)
        out = out / np.linalg.norm(out, axis=1, keepdims=True)
        print(f"{name:<28} {rate:6.1f} images/s   min cosine to fp32 {float((out * reference).sum(1).min()):.5f}")

    def eager(m: torch.nn.Module, dtype: torch.dtype, memory_format: torch.memory_format = torch.contiguous_format) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with torch.inference_mode():
                return m.encode_image(batch.to(dtype).contiguous(memory_format=memory_format)).float().numpy()  # type: ignore[operator]
        return run

    measure("fp32 eager", eager(model, torch.float32))
    measure("fp32 channels-last", eager(model.to(memory_format=torch.channels_last), torch.float32, torch.channels_last))
    model = model.to(memory_format=torch.contiguous_format)

    def autocast() -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model.encode_image(batch).float().numpy()

    measure("fp32 + bf16 autocast", autocast)
    measure("bf16 weights (default)", eager(model.visual.to(torch.bfloat16) and model, torch.bfloat16))
    compiled = torch.compile(model.visual)
    measure("bf16 weights + compile", lambda: _run_visual(compiled, batch.to(torch.bfloat16)))
    model.visual.to(torch.float32)

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "visual.onnx"
        torch.onnx.export(model.visual, (batch[:2],), str(path), input_names=["pixel_values"], output_names=["features"],
                          dynamic_axes={"pixel_values": {0: "n"}, "features": {0: "n"}}, opset_version=17, dynamo=False)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        measure("onnxruntime fp32", lambda: session.run(None, {"pixel_values": batch.numpy()})[0])
        quantized = Path(tmp) / "visual.int8.onnx"
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
        session8 = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
        measure("onnxruntime int8 dynamic", lambda: session8.run(None, {"pixel_values": batch.numpy()})[0])


def _run_visual(visual: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return visual(pixels).float().numpy()


if __name__ == "__main__":
    main()
