"""Service mode: a CLIP inference server encodes for us, so many clients share its GPUs.

`http://host:port` speaks the plain JSON protocol of clip-as-service's HTTP gateway (no jina
needed): `POST /post` with `{"execEndpoint": "/encode", "data": [{"text": ...} | {"blob": base64}]}`,
embeddings in `data[i].embedding`, failures as HTTP 200 with a non-null `header.status`, readiness
at `GET /dry_run`. Our own `--mode serve-encoder` answers the same protocol.

Images are decoded and scaled down here (in the decode workers) and sent as JPEG bytes; vectors are
normalised by CLIPEncoder like every backend's.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from clip_encoder import DEFAULT_MODEL, register_backend
from errors import EncoderError, InvalidArgumentError, ModelLoadError

PREPARED_SIDE = 448  # the server resizes to its model's input; this keeps uploads small and detail intact


@register_backend("service")
class ServiceBackend:
    """A remote encoder reached over HTTP (clip-as-service's gateway protocol)."""

    def __init__(self, model_name: str | None, server: str | None = None, timeout: float = 60.0, retries: int = 3,
                 transport: Any = None, **_: Any):
        if not server:
            raise InvalidArgumentError("service mode needs a server: --clip-server http://host:51000")
        if server.startswith("grpc://"):
            raise InvalidArgumentError(
                f"{server}: the gRPC protocol needs clip-client, whose jina pins (pydantic<2) cannot share an environment "
                "with this program; use the server's HTTP gateway (http://host:port) instead")
        if not server.startswith(("http://", "https://")):
            raise InvalidArgumentError(f"--clip-server must start with http:// or https://, got {server!r}")
        import httpx

        self.server = server.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(base_url=self.server, timeout=timeout, transport=transport)
        self._wait_ready()
        self.dim = int(self.embed_texts(["dimension probe"]).shape[1])
        self.image_size = 224
        self.server_model = self._server_model()
        if model_name and self.server_model and self.server_model != model_name:
            raise ModelLoadError(f"the CLIP server at {self.server} serves {self.server_model!r}, not {model_name!r}; "
                                 f"use --model {self.server_model!r} (and a collection built with it) or another server")
        # With no model named, take the server's word, else clip-server's default model.
        self.model_name = model_name or self.server_model or DEFAULT_MODEL

    # ------------------------------------------------------------------ protocol

    def _request(self, method: str, route: str, **kwargs: Any) -> Any:
        import httpx

        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, route, **kwargs)
                if response.status_code >= 500 and attempt < self.retries:
                    raise httpx.HTTPStatusError("server error", request=response.request, response=response)
                return response
            except (httpx.TransportError, httpx.HTTPStatusError) as error:
                if attempt == self.retries:
                    if isinstance(error, httpx.TimeoutException):
                        raise EncoderError(f"the CLIP server at {self.server} did not answer in time ({error.__class__.__name__})") from None
                    raise EncoderError(f"cannot reach the CLIP server at {self.server}: {error}; is it running?") from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        response = self._request("GET", "/dry_run")
        if response.status_code != 200:
            raise EncoderError(f"the CLIP server at {self.server} is not ready (GET /dry_run answered {response.status_code})")

    def _server_model(self) -> str | None:
        try:
            response = self._http.get("/status")
            model = response.json().get("model") if response.status_code == 200 else None
            return str(model) if isinstance(model, str) and model else None
        except Exception:  # clip-server has no /status: the model name cannot be checked there
            return None

    def _encode(self, items: list[dict[str, str]]) -> np.ndarray:
        response = self._request("POST", "/post", json={"execEndpoint": "/encode", "data": items})
        try:
            body = response.json()
        except ValueError:
            raise EncoderError(f"the CLIP server at {self.server} answered {response.status_code} with no JSON") from None
        status = (body.get("header") or {}).get("status")
        if response.status_code != 200 or status:
            detail = (status or {}).get("description") if isinstance(status, dict) else status
            raise EncoderError(f"the CLIP server could not encode the batch: {detail or response.status_code}")
        embeddings = [doc.get("embedding") for doc in body.get("data", [])]
        if len(embeddings) != len(items) or any(e is None for e in embeddings):
            raise EncoderError("the CLIP server answered without an embedding for every item")
        return np.asarray(embeddings, dtype=np.float32)

    # ------------------------------------------------------------------ EncoderBackend

    def prepare_image(self, image: Image.Image) -> bytes:
        """Small images travel losslessly (PNG); larger ones are scaled to PREPARED_SIDE and sent as JPEG."""
        buffer = io.BytesIO()
        scale = PREPARED_SIDE / min(image.size)
        if scale >= 1:
            image.save(buffer, format="PNG", compress_level=1)
        else:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC)
            image.save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()

    def embed_images(self, prepared: Sequence[bytes]) -> np.ndarray:
        items = [{"blob": base64.b64encode(data).decode("ascii")} for data in prepared]
        try:
            return self._encode(items)
        except EncoderError as error:
            if "could not encode" not in str(error) or len(items) == 1:
                raise
        # One bad item fails the server's whole batch: find it, mark it with NaN, keep the rest.
        rows = []
        for item in items:
            try:
                rows.append(self._encode([item])[0])
            except EncoderError as error:
                if "could not encode" not in str(error):
                    raise
                rows.append(np.full(self.dim, np.nan, dtype=np.float32))
        return np.stack(rows)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([{"text": text} for text in texts])

    def close(self) -> None:
        self._http.close()
