"""Our own CLIP encoder server, speaking clip-as-service's HTTP JSON protocol on current dependencies.

    python image_search.py --mode serve-encoder --model ViT-B-32::openai --host 127.0.0.1 --port 51000

`POST /post` `{"execEndpoint": "/encode", "data": [{"text": ...} | {"blob": base64 image} | {"uri": data-URI}]}`
answers `{"data": [{..., "embedding": [...]}], "header": {"status": null}}`; a failure answers HTTP 200
with `header.status` set, as jina's gateway does. `GET /dry_run` is readiness, `GET /status` names
the model and dimension. Concurrent requests are batched together before they reach the model.
"""

from __future__ import annotations

import base64
import queue
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from clip_encoder import CLIPEncoder
from errors import ImageSearchError
from image_loading import load_rgb

MAX_WAIT_SECONDS = 0.005  # how long a batch waits for company


class MicroBatcher:
    """Collects items from concurrent requests into one model call per kind (text or image)."""

    def __init__(self, encoder: CLIPEncoder, max_batch: int = 64):
        self.encoder = encoder
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[str, Any, Future[np.ndarray]]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="encoder-batcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, item: Any) -> Future[np.ndarray]:
        future: Future[np.ndarray] = Future()
        self._queue.put((kind, item, future))
        return future

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            try:
                while len(batch) < self.max_batch:
                    batch.append(self._queue.get(timeout=MAX_WAIT_SECONDS))
            except queue.Empty:
                pass
            for kind in ("text", "image"):
                group = [(item, future) for k, item, future in batch if k == kind]
                if not group:
                    continue
                try:
                    items = [item for item, _ in group]
                    vectors = self.encoder.encode_texts(items) if kind == "text" else self.encoder.encode_prepared(items)
                    for (_, future), vector in zip(group, vectors, strict=True):
                        future.set_result(vector)
                except Exception as error:  # every waiting request hears about it
                    for _, future in group:
                        future.set_exception(error)


def _status(description: str) -> dict[str, Any]:
    return {"data": None, "header": {"status": {"code": 1, "description": description}}}


def create_encoder_app(encoder: CLIPEncoder) -> FastAPI:
    app = FastAPI(title="image_search encoder", description="CLIP encoding over clip-as-service's HTTP protocol")
    batcher = MicroBatcher(encoder, max_batch=max(encoder.batch_size, 8))

    def prepared_image(doc: dict[str, Any]) -> Any:
        if "blob" in doc:
            data = base64.b64decode(doc["blob"], validate=True)
        else:
            uri = str(doc["uri"])
            if not uri.startswith("data:") or "," not in uri:
                raise ImageSearchError("only data: URIs are accepted as uri (this server reads no files)")
            data = base64.b64decode(uri.split(",", 1)[1])
        return encoder.prepare_image(load_rgb(data, min_side=encoder.image_size))

    @app.get("/dry_run")
    def dry_run() -> dict[str, Any]:
        return {"code": 0, "description": "ready", "exception": None}

    @app.get("/status")
    def status() -> dict[str, Any]:
        return {"model": encoder.model_name, "dim": encoder.dim, "image_size": encoder.image_size}

    @app.post("/post")
    async def post(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            docs = body.get("data")
            if body.get("execEndpoint", "/encode") != "/encode" or not isinstance(docs, list):
                return JSONResponse(_status("expected {'execEndpoint': '/encode', 'data': [...]}"))
            futures = []
            for doc in docs:
                if isinstance(doc, dict) and isinstance(doc.get("text"), str):
                    futures.append(batcher.submit("text", doc["text"]))
                elif isinstance(doc, dict) and ("blob" in doc or "uri" in doc):
                    futures.append(batcher.submit("image", prepared_image(doc)))
                else:
                    return JSONResponse(_status("each document needs a 'text', a 'blob' or a data 'uri'"))
            out = []
            for doc, future in zip(docs, futures, strict=True):
                vector = await _wait(future)
                out.append({**{k: v for k, v in doc.items() if k not in ("blob", "uri")}, "embedding": vector.tolist()})
            return JSONResponse({"data": out, "header": {"status": None}})
        except (ImageSearchError, ValueError) as error:
            return JSONResponse(_status(str(error)))

    return app


async def _wait(future: Future[np.ndarray]) -> np.ndarray:
    import asyncio

    return await asyncio.wrap_future(future)


def serve_encoder(encoder: CLIPEncoder, host: str = "127.0.0.1", port: int = 51000) -> None:
    import uvicorn

    uvicorn.run(create_encoder_app(encoder), host=host, port=port, log_level="warning")
