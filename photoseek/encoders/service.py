"""Service mode: a CLIP inference server encodes for us, so many clients share its GPUs.

Two wire protocols, both clip-as-service's, chosen by the server URL's scheme:

- `grpc://host:port` (clip-server's default, what clip-client speaks): jina's `DataRequestProto`
  over gRPC (jina_protocol.py), one unary `process_single_data` call per batch, readiness through
  `dry_run`, the model name through `_status` where the server tells it (ours does).
- `http://host:port`: the plain JSON protocol of its HTTP gateway: `POST /post` with
  `{"execEndpoint": "/encode", "data": [{"text": ...} | {"blob": base64}]}`, embeddings in
  `data[i].embedding`, failures as HTTP 200 with a non-null `header.status`, readiness at
  `GET /dry_run`, the model at `GET /status` (ours only).

Several servers (`grpc://a:51000,grpc://b:51000`, protocols may mix) share the batches: each batch
goes to the next server in turn; a server that stops answering is set aside for a while and its batch
goes to another, so an index run finishes as long as one server answers. A server is checked (ready,
model, dimension) before its first batch, also when it comes back later.

Neither needs jina: clip-client's pins cannot share an environment with FastAPI and pydantic 2.
Images are decoded and scaled down here (in the decode workers) and sent as image bytes; vectors
are normalised by CLIPEncoder like every backend's.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
from PIL import Image

import photoseek.encoders.jina_protocol as jp
from photoseek.encoders.base import BUILTIN_MODELS, CN_CLIP_PREFIX, DEFAULT_MODEL
from photoseek.errors import EncoderError, EncoderRejectedError, EncoderServerWarning, InvalidArgumentError, ModelLoadError

PREPARED_SIDE = 448  # the server resizes to its model's input; this keeps uploads small and detail intact
MAX_INPUT_SIDE = 2048  # no CLIP model takes more; open_clip's largest is 512
DEFAULT_IMAGE_SIZE = 224  # the input of clip-server's default model, for a server that does not say and a model we cannot look up
SET_ASIDE_SECONDS = 30.0  # how long a server that stopped answering gets no batches before it is tried again
DIMENSION_PROBE = "dimension probe"
Doc = tuple[str, Any]  # ("text", str) or ("blob", image bytes)
T = TypeVar("T")


class ServerInfo(NamedTuple):
    """What a server says about itself: ours tells both; clip-server neither (None)."""

    model: str | None
    image_size: int | None


def _input_side(value: object) -> int | None:
    """An input side a server or a config states, if it is one: a whole number of pixels, at most
    MAX_INPUT_SIDE (a server that said 100,000 would have every photo decoded and sent at full size)."""
    number = int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else 0
    return number if 0 < number <= MAX_INPUT_SIDE else None


def model_input_size(name: str) -> int | None:
    """The input side of a model named as clip-server names it (`ViT-L-14-336::openai`, `CN-CLIP/ViT-L-14-336`),
    from the model's own config (open_clip's bundled JSON, read without importing open_clip and torch);
    None for a name whose config is not here (an `hf-hub:` model, a mistyped name)."""
    if name.startswith(CN_CLIP_PREFIX):
        from photoseek.encoders.cn_clip import CN_CLIP_MODELS

        cn_arch = CN_CLIP_MODELS.get(name.removeprefix(CN_CLIP_PREFIX).partition("::")[0])
        return cn_arch.image_size if cn_arch else None
    if name in BUILTIN_MODELS:
        config_file = BUILTIN_MODELS[name] / "open_clip_config.json"
    else:
        arch = name.partition("::")[0]
        spec = importlib.util.find_spec("open_clip")
        if not re.fullmatch(r"[\w.-]+", arch) or spec is None or not spec.submodule_search_locations:
            return None
        config_file = Path(next(iter(spec.submodule_search_locations))) / "model_configs" / f"{arch}.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    size = config.get("model_cfg", config).get("vision_cfg", {}).get("image_size")
    return _input_side(size)  # a non-square [height, width] is none of ours: the default serves it


class _Connection(Protocol):
    def wait_ready(self) -> None: ...

    def encode(self, docs: Sequence[Doc]) -> np.ndarray: ...

    def server_info(self) -> ServerInfo: ...

    def close(self) -> None: ...


def _with_retries(call: Callable[[], T], retries: int, transient: Callable[[Exception], bool],
                  give_up: Callable[[Exception], EncoderError]) -> T:
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as error:
            if not transient(error):
                raise
            if attempt == retries:
                raise give_up(error) from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class _HttpConnection:
    def __init__(self, server: str, timeout: float, retries: int):
        import httpx

        self.server = server
        self.retries = retries
        self._http = httpx.Client(base_url=server, timeout=timeout)

    def _request(self, method: str, route: str, **kwargs: Any) -> Any:
        import httpx

        def once() -> Any:
            response = self._http.request(method, route, **kwargs)
            if response.status_code >= 500:
                raise httpx.HTTPStatusError("server error", request=response.request, response=response)
            return response

        def give_up(error: Exception) -> EncoderError:
            if isinstance(error, httpx.TimeoutException):
                return EncoderError(f"the CLIP server at {self.server} did not answer in time ({error.__class__.__name__})")
            if isinstance(error, httpx.HTTPStatusError):
                return EncoderError(f"the CLIP server at {self.server} answered HTTP {error.response.status_code} on {route}, "
                                    f"{self.retries + 1} time(s) in a row")
            return EncoderError(f"cannot reach the CLIP server at {self.server}: {error}; is it running?")

        return _with_retries(once, self.retries, lambda e: isinstance(e, (httpx.TransportError, httpx.HTTPStatusError)), give_up)

    def wait_ready(self) -> None:
        response = self._request("GET", "/dry_run")
        if response.status_code != 200:
            raise EncoderError(f"the CLIP server at {self.server} is not ready (GET /dry_run answered {response.status_code})")
        try:
            status = response.json()
        except ValueError:  # a readiness answer without a body: the 200 says it
            return
        # jina's gateway answers 200 while its executor is starting or down, with the failure in the body
        if isinstance(status, dict) and status.get("code", 0) not in (0, "SUCCESS"):
            raise EncoderError(f"the CLIP server at {self.server} is not ready: {status.get('description') or 'dry_run failed'}")

    def server_info(self) -> ServerInfo:
        try:
            response = self._http.get("/status")
            status = response.json() if response.status_code == 200 else {}
        except Exception:  # clip-server has no /status: the model name cannot be checked there
            return ServerInfo(None, None)
        model = status.get("model") if isinstance(status, dict) else None
        return ServerInfo(model if isinstance(model, str) and model else None,
                          _input_side(status.get("image_size")) if isinstance(status, dict) else None)

    def encode(self, docs: Sequence[Doc]) -> np.ndarray:
        items = [{"text": value} if kind == "text" else {"blob": base64.b64encode(value).decode("ascii")}
                 for kind, value in docs]
        response = self._request("POST", "/post", json={"execEndpoint": "/encode", "data": items})
        try:
            body = response.json()
        except ValueError:
            raise EncoderError(f"the CLIP server at {self.server} answered {response.status_code} with no JSON") from None
        status = (body.get("header") or {}).get("status")
        if response.status_code != 200 or status:
            detail = (status or {}).get("description") if isinstance(status, dict) else status
            raise EncoderRejectedError(f"the CLIP server could not encode the batch: {detail or response.status_code}")
        embeddings = [doc.get("embedding") for doc in body.get("data", [])]
        if len(embeddings) != len(items) or any(e is None for e in embeddings):
            raise EncoderError("the CLIP server answered without an embedding for every item")
        return np.asarray(embeddings, dtype=np.float32)

    def close(self) -> None:
        self._http.close()


class _GrpcConnection:
    """clip-as-service's gRPC protocol, as clip-client speaks it, with grpcio and our message classes."""

    def __init__(self, server: str, timeout: float, retries: int):
        import grpc

        self.server = server
        self.timeout = timeout
        self.retries = retries
        target = server.split("://", 1)[1].rstrip("/")
        if server.startswith("grpcs://"):
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=jp.CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, options=jp.CHANNEL_OPTIONS)
        self._process = self._channel.unary_unary(jp.PROCESS_SINGLE_DATA, request_serializer=jp.DataRequest.SerializeToString,
                                                  response_deserializer=jp.DataRequest.FromString)
        self._dry_run = self._channel.unary_unary(jp.DRY_RUN, request_serializer=jp.Empty.SerializeToString,
                                                  response_deserializer=jp.Status.FromString)
        self._info = self._channel.unary_unary(jp.INFO, request_serializer=jp.Empty.SerializeToString,
                                               response_deserializer=jp.JinaInfo.FromString)

    def _call(self, method: Any, request: Any) -> Any:
        import grpc

        transient = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}

        def give_up(error: Exception) -> EncoderError:
            code = error.code() if isinstance(error, grpc.RpcError) else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return EncoderError(f"the CLIP server at {self.server} did not answer in time ({self.timeout:g} s)")
            return EncoderError(f"cannot reach the CLIP server at {self.server} ({error.details() if isinstance(error, grpc.RpcError) else error}); "
                                "is it running, and is that its gRPC port?")

        try:
            return _with_retries(lambda: method(request, timeout=self.timeout), self.retries,
                                 lambda e: isinstance(e, grpc.RpcError) and e.code() in transient, give_up)
        except grpc.RpcError as error:  # not transient: the server is there but refuses the call
            raise EncoderError(f"the CLIP server at {self.server} refused the call: {error.code().name} {error.details()}") from None

    def wait_ready(self) -> None:
        status = self._call(self._dry_run, jp.Empty())
        if status.code != jp.SUCCESS:
            raise EncoderError(f"the CLIP server at {self.server} is not ready: {status.description or 'dry_run failed'}")

    def server_info(self) -> ServerInfo:
        try:
            info = self._call(self._info, jp.Empty()).jina
        except EncoderError:
            return ServerInfo(None, None)
        # clip-server does not tell: the dimension is still checked
        return ServerInfo(info.get("image_search.model") or None, _input_side(info.get("image_search.image_size")))

    def encode(self, docs: Sequence[Doc]) -> np.ndarray:
        request = jp.DataRequest()
        request.header.request_id = uuid.uuid4().hex
        request.header.exec_endpoint = "/encode"
        request.parameters.fields["drop_image_content"].bool_value = True  # no need to get our images back
        for kind, value in docs:
            doc = request.data.docs.docs.add(id=uuid.uuid4().hex)
            if kind == "text":
                doc.text = value
            else:
                doc.blob = value
        response = self._call(self._process, request)
        status = response.header.status
        if status.code != jp.SUCCESS:
            raise EncoderRejectedError(f"the CLIP server could not encode the batch: {status.description or status.exception.name}")
        if response.data.WhichOneof("documents") != "docs":
            raise EncoderError("the CLIP server answered with documents in a form other than protobuf")
        by_id = {doc.id: jp.read_array(doc.embedding) for doc in response.data.docs.docs}
        rows = [by_id.get(doc.id) for doc in request.data.docs.docs]
        if any(row is None for row in rows):
            raise EncoderError("the CLIP server answered without an embedding for every item")
        return np.stack([np.asarray(row, dtype=np.float32).reshape(-1) for row in rows if row is not None])

    def close(self) -> None:
        self._channel.close()


def _connect(server: str, timeout: float, retries: int) -> _Connection:
    if server.startswith(("grpc://", "grpcs://")):
        return _GrpcConnection(server, timeout, retries)
    if server.startswith(("http://", "https://")):
        return _HttpConnection(server, timeout, retries)
    raise InvalidArgumentError(f"--clip-server must start with grpc://, grpcs://, http:// or https://, got {server!r}")


class _Member:
    """One server of a pool: its connection, whether it was checked, and until when it is set aside."""

    def __init__(self, url: str, connection: _Connection):
        self.url = url
        self.connection = connection
        self.checked = False
        self.set_aside_until = 0.0
        self.last_error = ""


class _Pool:
    """Several servers as one connection: batches in turn, a silent server set aside, its batch resent.

    The first server that answers fixes the model and dimension; every other one is checked against
    them before its first batch (a server serving another model is set aside for good, with a warning)."""

    def __init__(self, members: list[_Member]):
        self.members = members
        self._lock = threading.Lock()
        self._next = 0
        self.model: str | None = None
        self.image_size: int | None = None
        self.dim: int | None = None

    def _check(self, member: _Member) -> None:
        member.connection.wait_ready()
        model, image_size = member.connection.server_info()
        dim = int(member.connection.encode([("text", DIMENSION_PROBE)]).shape[1])
        with self._lock:
            if member.set_aside_until == float("inf"):  # another batch's check of it got here first, and warned
                raise EncoderRejectedError(f"the CLIP server at {member.url} serves another model")
            if self.dim is None:
                self.model, self.dim = model, dim
            elif dim != self.dim or (model and self.model and model != self.model):
                member.set_aside_until = float("inf")
                what = f"{model!r}, {dim}-d" if model else f"{dim}-d vectors"
                warnings.warn(f"the CLIP server at {member.url} serves {what}, unlike {self.model or 'the others'} "
                              f"({self.dim}-d): it gets no batches", EncoderServerWarning, stacklevel=2)
                raise EncoderRejectedError(f"the CLIP server at {member.url} serves another model")
            self.model = self.model or model
            self.image_size = self.image_size or image_size
            member.checked = True

    def _order(self) -> list[_Member]:
        """Servers to try for the next batch: those in service, in turn, then those set aside (soonest back first)."""
        with self._lock:
            start, self._next = self._next, self._next + 1
        now = time.monotonic()
        rotated = self.members[start % len(self.members):] + self.members[:start % len(self.members)]
        ready = [m for m in rotated if m.set_aside_until <= now]
        waiting = sorted((m for m in rotated if now < m.set_aside_until < float("inf")), key=lambda m: m.set_aside_until)
        return ready + waiting

    def _set_aside(self, member: _Member, error: EncoderError) -> None:
        with self._lock:
            announce = member.set_aside_until <= time.monotonic()
            member.set_aside_until = time.monotonic() + SET_ASIDE_SECONDS
            member.last_error = str(error)
            member.checked = False  # what answers there when it comes back may be another server: check it again
        if announce and len(self.members) > 1:
            warnings.warn(f"{error}; its batches go to the other CLIP servers for {SET_ASIDE_SECONDS:g} s", EncoderServerWarning, stacklevel=3)

    def _on_each(self, work: Callable[[_Connection], T]) -> T:
        for member in self._order():
            try:
                if not member.checked:
                    self._check(member)
                return work(member.connection)
            except EncoderRejectedError:
                if member.checked:  # the server is fine; the batch is not
                    raise
            except EncoderError as error:
                self._set_aside(member, error)
        problems = "; ".join(m.last_error or f"{m.url}: serves another model" for m in self.members)
        raise EncoderError(problems if len(self.members) == 1 else f"no CLIP server answered: {problems}")

    def wait_ready(self) -> None:
        self._on_each(lambda connection: None)

    def server_info(self) -> ServerInfo:
        return ServerInfo(self.model, self.image_size)

    def encode(self, docs: Sequence[Doc]) -> np.ndarray:
        return self._on_each(lambda connection: connection.encode(docs))

    def close(self) -> None:
        for member in self.members:
            member.connection.close()


class ServiceBackend:
    """A remote encoder: clip-server or our --mode serve-encoder, over gRPC or HTTP; one server or several
    (comma-separated) sharing the batches."""

    def __init__(self, model_name: str | None, server: str | None = None, timeout: float = 60.0, retries: int = 3,
                 batches_in_flight: int = 3, **_: Any):
        if not server or not server.strip(" ,"):
            raise InvalidArgumentError("service mode needs a server: --clip-server grpc://host:51000")
        urls = [part.strip().rstrip("/") for part in server.split(",") if part.strip()]
        if len(set(urls)) != len(urls):
            raise InvalidArgumentError(f"--clip-server names a server twice: {server!r}")
        self.server = ",".join(urls)
        # the indexer keeps this many batches at the servers, so none idles through a round trip
        self.batches_in_flight = batches_in_flight * len(urls)
        # with several servers the pool is the retry: a silent one is left after one retry, not after three
        per_server_retries = retries if len(urls) == 1 else min(retries, 1)
        members: list[_Member] = []
        try:
            for url in urls:
                members.append(_Member(url, _connect(url, timeout, per_server_retries)))
            self._connection = _Pool(members)
            self._connection.wait_ready()  # the first server that answers fixes model and dimension
        except BaseException:
            for member in members:
                member.connection.close()
            raise
        assert self._connection.dim is not None
        self.dim = self._connection.dim
        self.server_model = self._connection.model
        if model_name and self.server_model and self.server_model != model_name:
            self._connection.close()
            raise ModelLoadError(f"the CLIP server at {self.server} serves {self.server_model!r}, not {model_name!r}; "
                                 f"use --model {self.server_model!r} (and a collection built with it) or another server")
        # With no model named, take the server's word, else clip-server's default model.
        self.model_name = model_name or self.server_model or DEFAULT_MODEL
        # Photos are decoded (JPEG draft) to at least the model's input, and sent no smaller: a 336 px model
        # given the 224 px of clip-server's default would see 1080p frames upscaled from 270 px
        self.image_size = self._connection.image_size or model_input_size(self.model_name) or DEFAULT_IMAGE_SIZE
        self.prepared_side = max(PREPARED_SIDE, self.image_size)
        self.build: dict[str, Any] = {"library": "service", "server": self.server}  # how it builds its model is its own

    def prepare_image(self, image: Image.Image) -> bytes:
        """Small images travel losslessly (PNG); larger ones are scaled to `prepared_side` and sent as JPEG."""
        buffer = io.BytesIO()
        scale = self.prepared_side / min(image.size)
        if scale >= 1:
            image.save(buffer, format="PNG", compress_level=1)
        else:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC)
            image.save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()

    def embed_images(self, prepared: Sequence[bytes]) -> np.ndarray:
        docs: list[Doc] = [("blob", data) for data in prepared]
        try:
            return self._connection.encode(docs)
        except EncoderRejectedError:
            if len(docs) == 1:
                raise
        # One bad item fails the server's whole batch: find it, mark it with NaN, keep the rest.
        rows = []
        for doc in docs:
            try:
                rows.append(self._connection.encode([doc])[0])
            except EncoderRejectedError:
                rows.append(np.full(self.dim, np.nan, dtype=np.float32))
        return np.stack(rows)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._connection.encode([("text", text) for text in texts])

    def close(self) -> None:
        self._connection.close()
