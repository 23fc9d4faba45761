"""photoseek's encoder face: `CLIPEncoder` turns texts and images into CLIP vectors, with a backend chosen by mode:
"local" (open_clip models, run on ONNX Runtime or torch in this process; Chinese-CLIP for `CN-CLIP/...` names) or
"service" (a CLIP server: ours or clip-as-service, over gRPC or HTTP).

    >>> from clip_encoder import CLIPEncoder
    >>> encoder = CLIPEncoder(mode="local", model_name="ViT-B-32::openai")
    >>> encoder.encode_texts(["a cat"]).shape
    (1, 512)

The implementation lives in photoseek/encoders/ (encoder.py, and a module per backend).
"""

from photoseek.encoders.encoder import (
    BACKENDS,
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    CLIPEncoder,
    EncoderBackend,
    normalize,
    register_backend,
)

__all__ = ["CLIPEncoder", "EncoderBackend", "register_backend", "BACKENDS", "BUILTIN_MODELS", "DEFAULT_MODEL", "normalize"]
