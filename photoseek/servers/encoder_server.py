"""Our own CLIP encoder server: clip-as-service's protocols (gRPC and HTTP JSON) on current dependencies.

    photoseek --mode serve-encoder --model ViT-B-32::openai --host 127.0.0.1 --port 51000

gRPC on `--port` (clip-as-service's default 51000), so clip-client and our `grpc://` client talk to
it as to clip-server: jina's `JinaRPC/Call` stream and `process_single_data`, `dry_run` for
readiness, `_status` naming the model and dimension (jina_protocol.py has the messages).

HTTP JSON on `--http-port` (default port + 1): `POST /post` with `{"execEndpoint": "/encode",
"data": [{"text": ...} | {"blob": base64 image} | {"uri": data-URI}]}` answers
`{"data": [{..., "embedding": [...]}], "header": {"status": null}}`; a failure answers HTTP 200 with
`header.status` set, as jina's gateway does. `GET /dry_run` is readiness, `GET /status` names
the model and dimension. Concurrent requests are batched together before they reach the model.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from PIL import Image

from photoseek.encoders import jina_protocol
from photoseek.encoders.base import bounded_text
from photoseek.encoders.encoder import CLIPEncoder
from photoseek.errors import ImageSearchError, InvalidArgumentError, ServerStartError
from photoseek.indexing.decode import load_rgb
from photoseek.servers.limits import BodyLimit

MAX_WAIT_SECONDS = 0.005  # how long a batch waits for company


class MicroBatcher:
    """Collects items from concurrent requests into one model call per kind (text or image)."""

    def __init__(self, encoder: CLIPEncoder, max_batch: int = 64):
        self.encoder = encoder
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[str, Any, Future[np.ndarray]]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="encoder-batcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, item: Any, owner: Callable[[Future[np.ndarray]], None] | None = None) -> Future[np.ndarray]:
        """`owner` is given the future before the batcher can see it: one that cancels it (its client left) keeps
        it from ever being encoded."""
        future: Future[np.ndarray] = Future()
        if owner is not None:
            owner(future)
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
            # work for a client that went away (a cancelled future) is dropped, not computed
            batch = [(k, item, future) for k, item, future in batch if future.set_running_or_notify_cancel()]
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


@dataclass(frozen=True)
class EncoderLimits:
    """What one request may ask of the encoder server (both protocols); README, Service mode, lists them."""

    max_request_bytes: int = 64 * 1024 * 1024  # a gRPC message or an HTTP body
    max_documents: int = 1024  # per request
    max_tensor_pixels: int = 50_000_000  # per image sent as a tensor (height x width)
    max_request_seconds: float = 300.0  # a request not answered by then is answered with an error, its work dropped
    max_rpcs: int = 256  # gRPC calls at once (streams included); more are refused at once (RESOURCE_EXHAUSTED)
    stream_idle_seconds: float = 60.0  # a gRPC stream that sends nothing this long, with nothing pending, is ended


class RequestTimedOut(ImageSearchError):
    pass


def decode_base64(text: object) -> bytes:
    if not isinstance(text, (str, bytes)):
        raise InvalidArgumentError(f"a blob must be base64 text, got {type(text).__name__}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError("not valid base64") from None
    if not data:
        raise InvalidArgumentError("an empty blob")
    return data


def data_uri_bytes(uri: str) -> bytes:
    if not uri.startswith("data:") or "," not in uri:
        raise InvalidArgumentError("only data: URIs are accepted as uri (this server reads no files)")
    header, _, payload = uri.partition(",")
    if not header.endswith(";base64"):
        raise InvalidArgumentError("a data: URI must be base64 encoded (data:image/...;base64,...)")
    return decode_base64(payload)


def tensor_image(array: np.ndarray, limits: EncoderLimits) -> Image.Image:
    """An image from a tensor a client sent: H x W or H x W x C (C of 1, 3 or 4), numbers only, bounded."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InvalidArgumentError(f"a tensor image must be H x W or H x W x C with C of 1, 3 or 4, got shape {array.shape}")
    if array.shape[0] * array.shape[1] > limits.max_tensor_pixels or 0 in array.shape:
        raise InvalidArgumentError(f"a tensor image must have 1 to {limits.max_tensor_pixels} pixels, got shape {array.shape}")
    if array.dtype.kind not in "uif" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
        raise InvalidArgumentError(f"a tensor image must hold finite numbers, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(np.clip(array, 0, 255).astype("uint8")).convert("RGB")


def create_encoder_app(encoder: CLIPEncoder, batcher: MicroBatcher | None = None,
                       limits: EncoderLimits = EncoderLimits()) -> FastAPI:
    app = FastAPI(title="photoseek encoder", description="CLIP encoding over clip-as-service's HTTP protocol")
    batcher = batcher or MicroBatcher(encoder, max_batch=max(encoder.batch_size, 8))

    def prepared_image(doc: dict[str, Any]) -> Any:
        data = decode_base64(doc["blob"]) if "blob" in doc else data_uri_bytes(str(doc["uri"]))
        return encoder.prepare_image(load_rgb(data, min_side=encoder.image_size))

    def rejected(message: str) -> JSONResponse:
        return JSONResponse(_status(message), status_code=400)

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
        except ValueError:
            return rejected("the body is not JSON")
        docs = body.get("data") if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("execEndpoint", "/encode") != "/encode" or not isinstance(docs, list):
            return rejected("expected {'execEndpoint': '/encode', 'data': [...]}")
        if len(docs) > limits.max_documents:
            return rejected(f"at most {limits.max_documents} documents per request, got {len(docs)}")
        futures: list[Future[np.ndarray]] = []
        try:
            for position, doc in enumerate(docs):
                if isinstance(doc, dict) and isinstance(doc.get("text"), str):
                    futures.append(batcher.submit("text", bounded_text(doc["text"])))
                elif isinstance(doc, dict) and ("blob" in doc or "uri" in doc):
                    try:  # decoding is CPU work: off the event loop
                        prepared = await run_in_threadpool(prepared_image, doc)
                    except (ImageSearchError, ValueError, TypeError) as error:
                        raise InvalidArgumentError(f"document {position}: {error}") from None
                    futures.append(batcher.submit("image", prepared))
                else:
                    raise InvalidArgumentError(f"document {position} needs a 'text', a 'blob' or a data 'uri'")
            vectors = await _vectors_unless_client_leaves(request, futures, limits.max_request_seconds)
            if vectors is None:  # nobody to answer; the finally below drops the work still queued
                return JSONResponse(_status("the client went away"), status_code=499)
            out = []
            for doc, vector in zip(docs, vectors, strict=True):
                out.append({**{k: v for k, v in doc.items() if k not in ("blob", "uri")}, "embedding": vector.tolist()})
            return JSONResponse({"data": out, "header": {"status": None}})
        except InvalidArgumentError as error:
            return rejected(str(error))
        except ImageSearchError as error:
            return JSONResponse(_status(str(error)), status_code=500)
        finally:
            for future in futures:  # a request that failed or went away leaves no work behind
                future.cancel()

    app.add_middleware(BodyLimit, limit_for=lambda path: limits.max_request_bytes)
    return app


async def _vectors_unless_client_leaves(request: Request, futures: list[Future[np.ndarray]],
                                        seconds: float) -> list[np.ndarray] | None:
    """The futures' vectors, or None as soon as the client disconnects (uvicorn does not cancel a handler
    whose client left, so without this its texts would be encoded for nobody while others wait); after
    `seconds`, RequestTimedOut."""
    if not futures:
        return []
    waiting = [asyncio.wrap_future(future) for future in futures]
    all_done = asyncio.ensure_future(asyncio.wait(waiting))
    client_left = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((all_done, client_left), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        client_left.cancel()
    if not all_done.done():
        all_done.cancel()
        if not client_left.done() or client_left.cancelled():
            raise RequestTimedOut(f"the request was not answered within {seconds:.0f} s; send fewer documents at a time")
        return None
    errors = [vector.exception() for vector in waiting]  # each read, so none is logged as never retrieved
    if first_error := next((error for error in errors if error is not None), None):
        raise first_error
    return [vector.result() for vector in waiting]


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (the request's body has been read, so nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _AbandonedWork:
    """Cancels the queued work of an RPC whose client went away (cancelled, timed out, disconnected).

    gRPC runs an RPC's callbacks once, when it ends, and refuses new ones after that (add_callback returns
    False): work queued by a handler that ran on after its client left is cancelled as it is tracked, or it
    would be encoded for nobody while later requests wait behind it.
    """

    def __init__(self, context: Any):
        self._lock = threading.Lock()
        # only work not yet done: a clip-client stream of a million images must not keep a million vectors
        self._futures: set[Future[np.ndarray]] = set()
        self.client_gone = False
        if not context.add_callback(self._on_end):  # it ended before this handler got here
            self.client_gone = True

    def _on_end(self) -> None:
        with self._lock:
            self.client_gone = True
            futures, self._futures = self._futures, set()
        for future in futures:
            future.cancel()

    def _forget(self, future: Future[np.ndarray]) -> None:
        with self._lock:
            self._futures.discard(future)

    def track(self, future: Future[np.ndarray]) -> None:
        """Called before the future is queued: cancelled at once if the client has already left."""
        with self._lock:
            gone = self.client_gone
            if not gone:
                self._futures.add(future)
        if gone:
            future.cancel()
        else:
            future.add_done_callback(self._forget)


class JinaGrpcEncoder:
    """clip-as-service's gRPC services (jina's protocol) over the micro-batcher.

    As in clip-server, a document the model cannot take fails its whole request with an error status
    naming it; clients that want the rest encoded resend the others (ours does).
    """

    def __init__(self, encoder: CLIPEncoder, batcher: MicroBatcher, limits: EncoderLimits = EncoderLimits()):
        self.encoder = encoder
        self.batcher = batcher
        self.limits = limits

    def _image(self, doc: Any) -> Any:
        content = doc.WhichOneof("content")
        if content == "blob":
            data = doc.blob
        elif content == "tensor":
            try:
                array = jina_protocol.read_array(doc.tensor)
            except (TypeError, ValueError) as error:  # an unknown dtype, a buffer that does not fit its shape
                raise InvalidArgumentError(f"an unreadable tensor: {error}") from None
            if array is None:
                raise InvalidArgumentError("an empty tensor")
            return self.encoder.prepare_image(tensor_image(array, self.limits))
        elif doc.uri.startswith("data:"):
            data = data_uri_bytes(doc.uri)
        else:
            raise InvalidArgumentError("only text, blob, tensor or data: URIs are accepted (this server reads no files)")
        return self.encoder.prepare_image(load_rgb(data, min_side=self.encoder.image_size))

    def _submit(self, request: Any, abandoned: _AbandonedWork) -> list[Future[np.ndarray]] | str:
        """Queue every document of a request for the model, each tracked before it is queued (work queued after the
        client left is cancelled before the model sees it); an error message instead when one cannot be."""
        endpoint = request.header.exec_endpoint or "/encode"
        if endpoint != "/encode":
            return f"this server answers /encode only, not {endpoint}"
        if request.data.WhichOneof("documents") == "docs_bytes":
            return "documents sent as docs_bytes are not supported; send them as protobuf (jina's default)"
        if len(request.data.docs.docs) > self.limits.max_documents:
            return f"at most {self.limits.max_documents} documents per request, got {len(request.data.docs.docs)}"
        futures = []
        for position, doc in enumerate(request.data.docs.docs):
            if doc.WhichOneof("content") == "text":
                futures.append(self.batcher.submit("text", bounded_text(doc.text), owner=abandoned.track))
                continue
            try:
                futures.append(self.batcher.submit("image", self._image(doc), owner=abandoned.track))
            except Exception as error:  # one bad document fails its own request, never the stream
                for future in futures:
                    future.cancel()
                reason = str(error) if isinstance(error, (ImageSearchError, ValueError)) else f"{type(error).__name__}: {error}"
                return f"document {position} ({doc.id or 'no id'}): {reason}"
        return futures

    def _answer(self, request: Any, futures: list[Future[np.ndarray]] | str, submitted: float) -> Any:
        response = jina_protocol.DataRequest()
        response.CopyFrom(request)
        try:
            if isinstance(futures, str):
                raise InvalidArgumentError(futures)
            flag = request.parameters.fields.get("drop_image_content")  # clip-server's parameter, same meaning
            drop_content = flag is not None and flag.bool_value
            deadline = submitted + self.limits.max_request_seconds
            for doc, future in zip(response.data.docs.docs, futures, strict=True):
                try:
                    vector = future.result(timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    for rest in futures:
                        rest.cancel()
                    raise RequestTimedOut(f"the request was not answered within {self.limits.max_request_seconds:.0f} s; "
                                          "send fewer documents at a time") from None
                jina_protocol.write_array(doc.embedding, vector)
                if drop_content and doc.WhichOneof("content") in ("blob", "tensor"):
                    doc.ClearField(doc.WhichOneof("content"))
        except Exception as error:
            response.data.docs.ClearField("docs")
            response.data.docs.docs.extend(request.data.docs.docs)
            status = response.header.status
            status.code = jina_protocol.ERROR
            status.description = str(error)
            status.exception.name = type(error).__name__
            status.exception.args.append(str(error))
            status.exception.executor = "photoseek"
        return response

    # ------------------------------------------------------------------ RPCs

    def process_single_data(self, request: Any, context: Any) -> Any:
        abandoned = _AbandonedWork(context)  # a client that cancels or times out leaves no work behind
        submitted = time.monotonic()
        futures = self._submit(request, abandoned) if not abandoned.client_gone else "the client went away"
        return self._answer(request, futures, submitted)

    def call(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        """jina's bidirectional stream: read ahead so that a client's requests share model batches. A stream
        that sends nothing for `stream_idle_seconds` with nothing pending is ended: each open stream holds a
        thread of the server's pool, and idle ones must not take them all."""
        pending: queue.Queue[tuple[Any, Any, float] | None] = queue.Queue(maxsize=64)
        abandoned = _AbandonedWork(context)

        def read_ahead() -> None:
            try:
                for request in requests:
                    submitted = time.monotonic()
                    futures = self._submit(request, abandoned)
                    pending.put((request, futures, submitted))
            except Exception:  # the client went away: nothing left to answer
                pass
            finally:
                pending.put(None)

        threading.Thread(target=read_ahead, name="jina-call-reader", daemon=True).start()
        while True:
            try:
                item = pending.get(timeout=self.limits.stream_idle_seconds)
            except queue.Empty:
                context.cancel()  # idle: the stream ends, and its reader with it
                return
            if item is None:
                return
            yield self._answer(*item)

    def dry_run(self, _: Any, __: Any) -> Any:
        return jina_protocol.Status(code=jina_protocol.SUCCESS)

    def info(self, _: Any, __: Any) -> Any:
        info = jina_protocol.JinaInfo()
        info.jina.update({"image_search.model": self.encoder.model_name, "image_search.dim": str(self.encoder.dim),
                          "image_search.image_size": str(self.encoder.image_size)})
        return info

    def endpoint_discovery(self, _: Any, __: Any) -> Any:
        return jina_protocol.Endpoints(endpoints=["/encode"])


def create_grpc_server(encoder: CLIPEncoder, address: str, batcher: MicroBatcher | None = None,
                       limits: EncoderLimits = EncoderLimits()) -> tuple[Any, int]:
    """A gRPC server (not yet started) bound to `address` ("host:port"; port 0 picks one), and its port."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    service = JinaGrpcEncoder(encoder, batcher or MicroBatcher(encoder, max_batch=max(encoder.batch_size, 8)), limits)
    request = jina_protocol.DataRequest

    def unary(method: Any, deserialize: Any, serialize: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(method, request_deserializer=deserialize, response_serializer=serialize)

    handlers = [
        grpc.method_handlers_generic_handler("jina.JinaRPC", {"Call": grpc.stream_stream_rpc_method_handler(
            service.call, request_deserializer=request.FromString, response_serializer=request.SerializeToString)}),
        grpc.method_handlers_generic_handler("jina.JinaSingleDataRequestRPC", {"process_single_data": unary(
            service.process_single_data, request.FromString, request.SerializeToString)}),
        grpc.method_handlers_generic_handler("jina.JinaGatewayDryRunRPC", {"dry_run": unary(
            service.dry_run, jina_protocol.Empty.FromString, jina_protocol.Status.SerializeToString)}),
        grpc.method_handlers_generic_handler("jina.JinaInfoRPC", {"_status": unary(
            service.info, jina_protocol.Empty.FromString, jina_protocol.JinaInfo.SerializeToString)}),
        grpc.method_handlers_generic_handler("jina.JinaDiscoverEndpointsRPC", {"endpoint_discovery": unary(
            service.endpoint_discovery, jina_protocol.Empty.FromString, jina_protocol.Endpoints.SerializeToString)}),
    ]
    # no SO_REUSEPORT: a second server on a busy port must fail, not silently share it
    # one thread per call in flight (a stream holds its thread while open): more threads than calls allowed, so that
    # calls past the limit are refused at once rather than queued behind idle streams
    server = grpc.server(ThreadPoolExecutor(max_workers=limits.max_rpcs + 16, thread_name_prefix="grpc"), handlers=handlers,
                         maximum_concurrent_rpcs=limits.max_rpcs,
                         options=[("grpc.max_receive_message_length", limits.max_request_bytes),
                                  ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # newer grpcio raises where older ones returned 0
        port = 0
    if port == 0:
        raise ServerStartError(f"cannot listen for gRPC on {address} (is the port in use?)")
    return server, port


def serve_encoder(encoder: CLIPEncoder, host: str = "127.0.0.1", port: int = 51000, http_port: int | None = None) -> None:
    """gRPC on `port` and HTTP JSON on `http_port` (port + 1 unless given), one model and batcher behind both."""
    from photoseek.servers.listening import listening_socket, run_app

    http_socket = listening_socket(host, http_port or port + 1)
    batcher = MicroBatcher(encoder, max_batch=max(encoder.batch_size, 8))
    try:
        grpc_server, _ = create_grpc_server(encoder, f"{host}:{port}", batcher)
    except BaseException:
        http_socket.close()
        raise
    grpc_server.start()
    try:
        run_app(create_encoder_app(encoder, batcher), http_socket)
    finally:
        grpc_server.stop(grace=1)
