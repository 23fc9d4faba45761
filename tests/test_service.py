"""Service mode against our own encoder server over real sockets, in both of clip-as-service's protocols:
gRPC (jina's DataRequestProto, what clip-client speaks) and the HTTP gateway's JSON."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import TEST_MODEL, TEST_RUNTIME, captions_of
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from http_server import free_port, latencies_while, running_server
from PIL import Image

import photoseek.encoders.jina_protocol as jp
from clip_encoder import CLIPEncoder
from image_search import ImageSearchEngine
from photoseek.errors import CollectionMismatchError, EncoderError, ModelLoadError
from photoseek.servers.encoder_server import EncoderLimits, MicroBatcher, create_encoder_app, create_grpc_server

pytestmark = pytest.mark.slow  # real Milvus, the model, or servers: not in the fast tier


def assert_local_mode_gives(remote: list[Any], scenes: Path, queries: list[str], db: Path) -> None:
    """The same folder indexed in local mode answers `queries` with the same paths and scores (top 5)."""
    with ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=str(db), device="cpu") as local:
        local.index_directory(scenes)
        here = local.search_batch(queries, top_k=5)
    for a, b in zip(remote, here, strict=True):
        assert [r.path for r in a] == [r.path for r in b]
        # the same vectors up to float noise (the server decodes the bytes it is sent)
        assert np.allclose([r.score for r in a], [r.score for r in b], atol=2e-4)


@pytest.fixture(scope="module")
def encoder_urls(test_encoder: CLIPEncoder):  # type: ignore[no-untyped-def]
    """Our encoder server as `--mode serve-encoder` runs it: gRPC and HTTP over one batcher."""
    batcher = MicroBatcher(test_encoder)
    grpc_server, port = create_grpc_server(test_encoder, "127.0.0.1:0", batcher)
    grpc_server.start()
    try:
        with running_server(create_encoder_app(test_encoder, batcher)) as url:
            yield {"grpc": f"grpc://127.0.0.1:{port}", "http": url}
    finally:
        grpc_server.stop(grace=None)


@pytest.fixture(params=["grpc", "http"])
def encoder_url(request: pytest.FixtureRequest, encoder_urls: dict[str, str]) -> str:
    return encoder_urls[request.param]


def test_http_protocol_status_and_errors(encoder_urls: dict[str, str]) -> None:
    encoder_url = encoder_urls["http"]
    assert httpx.get(encoder_url + "/dry_run").json()["code"] == 0
    assert httpx.get(encoder_url + "/status").json() == {"model": TEST_MODEL, "dim": 64, "image_size": 64}
    body = httpx.post(encoder_url + "/post", json={"execEndpoint": "/encode", "data": [{"text": "a red circle"}]}).json()
    assert body["header"]["status"] is None and len(body["data"][0]["embedding"]) == 64
    bad = httpx.post(encoder_url + "/post", json={"execEndpoint": "/encode", "data": [{"blob": base64.b64encode(b"junk").decode()}]})
    assert bad.status_code == 400 and "not a recognised image format" in bad.json()["header"]["status"]["description"]
    local_file = httpx.post(encoder_url + "/post", json={"data": [{"uri": "/etc/passwd"}]}).json()
    assert "reads no files" in local_file["header"]["status"]["description"]


def test_grpc_protocol_status_and_errors(encoder_urls: dict[str, str]) -> None:
    import grpc

    channel = grpc.insecure_channel(encoder_urls["grpc"].removeprefix("grpc://"))
    dry_run = channel.unary_unary(jp.DRY_RUN, jp.Empty.SerializeToString, jp.Status.FromString)
    info = channel.unary_unary(jp.INFO, jp.Empty.SerializeToString, jp.JinaInfo.FromString)
    process = channel.unary_unary(jp.PROCESS_SINGLE_DATA, jp.DataRequest.SerializeToString, jp.DataRequest.FromString)
    assert dry_run(jp.Empty()).code == jp.SUCCESS
    assert dict(info(jp.Empty()).jina) == {"image_search.model": TEST_MODEL, "image_search.dim": "64",
                                           "image_search.image_size": "64"}

    def request(*docs: dict[str, object], endpoint: str = "/encode", drop: bool | None = None) -> object:
        message = jp.DataRequest()
        message.header.exec_endpoint = endpoint
        if drop is not None:
            message.parameters.fields["drop_image_content"].bool_value = drop
        for i, doc in enumerate(docs):
            message.data.docs.docs.add(id=f"doc{i}", **doc)
        return process(message)

    answer = request({"text": "a red circle"}, {"text": "一个红色的圆"})
    assert answer.header.status.code == jp.SUCCESS and [d.id for d in answer.data.docs.docs] == ["doc0", "doc1"]
    vectors = np.stack([jp.read_array(d.embedding) for d in answer.data.docs.docs])
    assert vectors.shape == (2, 64) and vectors.dtype == np.float32
    png = io.BytesIO()
    Image.new("RGB", (80, 80), (200, 20, 20)).save(png, format="PNG")
    kept, dropped = request({"blob": png.getvalue()}), request({"blob": png.getvalue()}, drop=True)
    assert kept.data.docs.docs[0].blob == png.getvalue() and not dropped.data.docs.docs[0].blob  # clip-server's parameter
    assert jp.read_array(kept.data.docs.docs[0].embedding).shape == (64,)
    junk = request({"text": "fine"}, {"blob": b"junk"})
    assert junk.header.status.code == jp.ERROR and "document 1 (doc1)" in junk.header.status.description
    assert "not a recognised image format" in junk.header.status.description
    assert "reads no files" in request({"uri": "/etc/passwd"}).header.status.description
    assert "answers /encode only" in request({"text": "x"}, endpoint="/rank").header.status.description
    channel.close()


@pytest.mark.mutation
def test_service_mode_gives_local_mode_results(encoder_url: str, tmp_path: Path, scenes: Path) -> None:
    (scenes / "corrupt.png").write_bytes(b"\x89PNG not really")
    queries = [c["en"] for c in list(captions_of(scenes).values())[:6]] + ["一个大的红色圆形"]
    with ImageSearchEngine(mode="service", clip_server=encoder_url, milvus_uri=str(tmp_path / "s.db")) as service:
        assert service.model_name == TEST_MODEL  # taken from the server
        summary = service.index_directory(scenes)
        assert summary.indexed == 24 and [Path(f.path).name for f in summary.failed] == ["corrupt.png"]
        remote = service.search_batch(queries, top_k=5)
        assert service.get_stats()["mode"] == "service"
    assert_local_mode_gives(remote, scenes, queries, tmp_path / "l.db")


@pytest.mark.mutation
def test_concurrent_clients_are_batched_and_correct(encoder_url: str, test_encoder: CLIPEncoder) -> None:
    import concurrent.futures

    texts = [f"a small blue star number {i}" for i in range(16)]
    expected = test_encoder.encode_texts(texts)
    clients = [CLIPEncoder(mode="service", model_name=TEST_MODEL, server=encoder_url) for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(clients[i % 4].encode_texts, [t]) for i, t in enumerate(texts)]
        got = [f.result()[0] for f in futures]
    for vector, reference in zip(got, expected, strict=True):
        assert float(vector @ reference) > 0.9999


@pytest.mark.mutation
@pytest.mark.parametrize("scheme", ["grpc", "grpcs", "http"])
def test_server_down_is_a_clear_error(scheme: str) -> None:
    started = time.time()
    port = free_port()
    with pytest.raises(EncoderError, match=f"^cannot reach the CLIP server at {scheme}://127.0.0.1:{port}.*is it running") as down:
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=f"{scheme}://127.0.0.1:{port}", retries=1)
    assert time.time() - started < 10
    if scheme == "grpc":
        assert str(down.value).endswith("; is it running, and is that its gRPC port?")


@pytest.mark.mutation
def test_wrong_model_on_the_server_is_refused(encoder_url: str) -> None:
    with pytest.raises(ModelLoadError, match="serves 'shapes-tiny::v1', not 'ViT-B-32::openai'"):
        CLIPEncoder(mode="service", model_name="ViT-B-32::openai", server=encoder_url)


@pytest.mark.mutation
def test_slow_server_times_out() -> None:
    app = FastAPI()

    @app.get("/dry_run")
    def ready() -> dict[str, int]:
        return {"code": 0}

    @app.post("/post")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(2)  # four times the client's timeout; the server waits for it on exit
        return {}

    with running_server(app) as url, pytest.raises(EncoderError, match="did not answer in time"):
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=url, timeout=0.5, retries=0)


@pytest.mark.mutation
def test_a_failing_http_server_is_named_as_failing_not_unreachable() -> None:
    app = FastAPI()

    @app.get("/dry_run")
    def ready() -> dict[str, int]:
        return {"code": 0}

    @app.post("/post")
    def broken() -> JSONResponse:
        return JSONResponse({"detail": "boom"}, status_code=500)

    with running_server(app) as url, pytest.raises(EncoderError, match=r"answered HTTP 500 on /post, 2 time\(s\) in a row"):
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=url, retries=1)


@pytest.mark.mutation
@pytest.mark.parametrize("answer", [{}, {"data": [{"id": "no embedding"}]}])
def test_an_http_answer_without_embeddings_is_refused(answer: dict[str, Any]) -> None:
    app = FastAPI()

    @app.get("/dry_run")
    def ready() -> dict[str, int]:
        return {"code": 0}

    @app.post("/post")
    def empty() -> dict[str, Any]:
        return answer

    with running_server(app) as url, \
            pytest.raises(EncoderError, match="^the CLIP server answered without an embedding for every item$"):
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=url, retries=0)


@pytest.mark.mutation
def test_an_unreachable_server_is_retried_with_waits_that_double(monkeypatch: pytest.MonkeyPatch) -> None:
    """0.5 s, 1 s, 2 s...: a server being restarted gets time to come back, a dead one is given up quickly."""
    waits: list[float] = []
    monkeypatch.setattr("photoseek.encoders.service.time.sleep", waits.append)
    with pytest.raises(EncoderError, match="cannot reach"):
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=f"http://127.0.0.1:{free_port()}", retries=3)
    assert waits == [0.5, 1.0, 2.0]
    from photoseek.errors import EncoderServerWarning

    waits.clear()  # in a pool the other servers are the retry: each silent one is retried once, then set aside
    with pytest.warns(EncoderServerWarning), pytest.raises(EncoderError, match="no CLIP server answered"):
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}",
                    retries=3)
    assert waits == [0.5, 0.5]


def clip_server_http(post: Any, dry_run_status: int = 200, dry_run_body: dict[str, Any] | None = None) -> FastAPI:
    """clip-server's HTTP gateway as far as our client uses it: GET /dry_run, and POST /post answered by `post`
    (the request's JSON body in, a response out)."""
    app = FastAPI()

    @app.get("/dry_run")
    def ready() -> JSONResponse:
        return JSONResponse({"code": 0} if dry_run_body is None else dry_run_body, status_code=dry_run_status)

    @app.post("/post")
    async def encode(request: Request) -> Any:
        return post(await request.json())

    return app


def unit_vectors(body: dict[str, Any]) -> dict[str, Any]:
    return {"data": [{"embedding": [1.0, 0.0, 0.0, 0.0]} for _ in body["data"]]}


@pytest.mark.mutation
def test_http_requests_are_clip_clients_and_vectors_come_back_as_float32() -> None:
    """What clip-client posts to clip-server's HTTP gateway: the /encode endpoint, texts as `text`, images as
    base64 `blob`s of the bytes prepared for it; what comes back is float32, one row per document."""
    seen: list[dict[str, Any]] = []

    def post(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        return unit_vectors(body)

    image = Image.new("RGB", (40, 30), (200, 30, 30))
    rng = np.random.default_rng(0)
    large = Image.fromarray(rng.integers(0, 255, (1200, 2000, 3), dtype=np.uint8))  # a photo's size: scaled down
    mid = Image.new("RGB", (500, 448), (30, 200, 30))  # shorter side at 448 already: sent as it is, losslessly
    with running_server(clip_server_http(post)) as url:
        encoder = CLIPEncoder(mode="service", model_name=None, server=url, retries=0)
        encoder.encode_images([large, mid])
        [sent_large, sent_mid] = [Image.open(io.BytesIO(base64.b64decode(d["blob"]))) for d in seen[-1]["data"]]
        texts = encoder.encode_texts(["a cat", "一只猫"])
        images = encoder.encode_images([image])
        encoder.close()
    # the shorter side at 448, the shape kept, as a high-quality JPEG (quantisation table of quality 95, not 75)
    assert (sent_large.format, sent_large.size) == ("JPEG", (747, 448)) and sent_large.quantization[0][0] <= 2
    assert (sent_mid.format, sent_mid.size) == ("PNG", (500, 448))
    assert texts.dtype == images.dtype == np.float32 and texts.shape == (2, 4) and images.shape == (1, 4)
    assert seen[-2] == {"execEndpoint": "/encode", "data": [{"text": "a cat"}, {"text": "一只猫"}]}
    assert list(seen[-1]) == ["execEndpoint", "data"] and seen[-1]["execEndpoint"] == "/encode"
    [blob] = seen[-1]["data"]
    assert list(blob) == ["blob"]
    sent = Image.open(io.BytesIO(base64.b64decode(blob["blob"])))
    assert sent.size == (40, 30) and sent.convert("RGB").getpixel((5, 5)) == (200, 30, 30)  # small: sent losslessly


def refusal_of(text: str, url: str) -> str:
    """The error a service encoder at `url` raises when the server refuses a batch of `text`."""
    from photoseek.errors import EncoderRejectedError

    encoder = CLIPEncoder(mode="service", model_name=None, server=url, retries=0)
    try:
        with pytest.raises(EncoderRejectedError) as refused:
            encoder.encode_texts([text])
    finally:
        encoder.close()
    return str(refused.value)


@pytest.mark.mutation
@pytest.mark.parametrize("answer,status,detail", [
    ({"header": {"status": {"code": 1, "description": "too small"}}}, 200, "too small"),  # jina's status record
    ({"header": {"status": "busy"}}, 200, "busy"),  # a status given as a bare string
    ({"header": {"status": {"code": 1}}}, 422, "422"),  # no description: the HTTP status says it
    ({}, 400, "400"),
])
def test_a_batch_the_http_server_refuses_is_named_with_its_reason(answer: dict[str, Any], status: int, detail: str) -> None:
    def post(body: dict[str, Any]) -> JSONResponse:
        if body["data"][0].get("text") == "refuse me":
            return JSONResponse(answer, status_code=status)
        return JSONResponse(unit_vectors(body))

    with running_server(clip_server_http(post)) as url:
        assert refusal_of("refuse me", url) == f"the CLIP server could not encode the batch: {detail}"


@pytest.mark.mutation
def test_an_http_server_that_is_not_ready_or_answers_no_json_is_named() -> None:
    from fastapi.responses import PlainTextResponse

    with running_server(clip_server_http(unit_vectors, dry_run_status=404)) as url, \
            pytest.raises(EncoderError) as not_ready:
        CLIPEncoder(mode="service", model_name=None, server=url, retries=0)
    assert str(not_ready.value) == f"the CLIP server at {url} is not ready (GET /dry_run answered 404)"
    # what jina's gateway answers while its executor starts: 200, the failure in the body
    starting = {"code": 1, "description": "Communication error with deployment clip_o", "exception": {"name": "InternalNetworkError"}}
    with running_server(clip_server_http(unit_vectors, dry_run_body=starting)) as url, pytest.raises(EncoderError) as starting_up:
        CLIPEncoder(mode="service", model_name=None, server=url, retries=0)
    assert str(starting_up.value) == f"the CLIP server at {url} is not ready: Communication error with deployment clip_o"
    # a failure by enum name (protobuf's JSON without jina's use_integers_for_enums) and without a description
    with running_server(clip_server_http(unit_vectors, dry_run_body={"code": "ERROR"})) as url, \
            pytest.raises(EncoderError) as unnamed:
        CLIPEncoder(mode="service", model_name=None, server=url, retries=0)
    assert str(unnamed.value) == f"the CLIP server at {url} is not ready: dry_run failed"
    # success as jina writes it (code 0 left out), and by enum name where default values are written
    for success in ({}, {"code": "SUCCESS", "description": ""}, {"code": 0}):
        with running_server(clip_server_http(unit_vectors, dry_run_body=success)) as url:
            CLIPEncoder(mode="service", model_name=None, server=url, retries=0).close()
    with running_server(clip_server_http(lambda body: PlainTextResponse("oops"))) as url, \
            pytest.raises(EncoderError) as no_json:
        CLIPEncoder(mode="service", model_name=None, server=url, retries=0)
    assert str(no_json.value) == f"the CLIP server at {url} answered 200 with no JSON"


@pytest.mark.mutation
def test_a_failing_server_of_a_pool_is_left_alone_for_a_while_and_a_lone_one_gets_no_pool_warning() -> None:
    import warnings

    from photoseek.errors import EncoderServerWarning

    posts: list[dict[str, Any]] = []

    def fail(body: dict[str, Any]) -> JSONResponse:
        posts.append(body)
        return JSONResponse({}, status_code=500)

    with running_server(clip_server_http(unit_vectors)) as good, running_server(clip_server_http(fail)) as bad:
        with pytest.warns(EncoderServerWarning, match=r"answered HTTP 500 on /post.*; its batches go to the other CLIP servers for 30 s"):
            encoder = CLIPEncoder(mode="service", model_name=None, server=f"{good},{bad}", retries=0)
            for _ in range(6):
                assert encoder.encode_texts(["a red circle"]).shape == (1, 4)
            encoder.close()
    assert len(posts) == 1  # its turn came three times: tried once, then set aside
    with running_server(clip_server_http(fail)) as lone, warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(EncoderError, match=r"answered HTTP 500 on /post, 1 time\(s\) in a row"):
            CLIPEncoder(mode="service", model_name=None, server=lone, retries=0)
    assert not [w for w in said if issubclass(w.category, EncoderServerWarning)]  # there are no other servers to name


@pytest.mark.mutation
def test_a_server_coming_back_is_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """What answers at an address after a failure may be another server: it is checked before it gets batches."""
    from photoseek.errors import EncoderServerWarning

    monkeypatch.setattr("photoseek.encoders.service.SET_ASIDE_SECONDS", 0.0)  # back at once
    posts: list[int] = []

    def flaky(body: dict[str, Any]) -> JSONResponse:
        posts.append(1)
        if len(posts) == 3:
            return JSONResponse({}, status_code=500)
        dim = 4 if len(posts) < 3 else 8  # after its failure: a server of another model
        return JSONResponse({"data": [{"embedding": [1.0] + [0.0] * (dim - 1)} for _ in body["data"]]})

    with running_server(clip_server_http(unit_vectors)) as good, running_server(clip_server_http(flaky)) as changing:
        with pytest.warns(EncoderServerWarning) as said:
            encoder = CLIPEncoder(mode="service", model_name=None, server=f"{good},{changing}", retries=0)
            shapes = {encoder.encode_texts(["a red circle"]).shape for _ in range(8)}
            encoder.close()
    assert shapes == {(1, 4)}
    assert any("serves 8-d vectors, unlike the others (4-d): it gets no batches" in str(w.message) for w in said)


@pytest.mark.mutation
def test_https_speaks_tls_and_other_schemes_are_refused_by_name() -> None:
    from photoseek.errors import InvalidArgumentError

    with running_server(clip_server_http(unit_vectors)) as url:
        over_tls = url.replace("http://", "https://")
        with pytest.raises(EncoderError, match=f"^cannot reach the CLIP server at {over_tls}: "):
            CLIPEncoder(mode="service", model_name=None, server=over_tls, retries=0, timeout=5)
    with pytest.raises(InvalidArgumentError) as refused:
        CLIPEncoder(mode="service", model_name=None, server="ftp://127.0.0.1:51000", retries=0)
    assert str(refused.value) == "--clip-server must start with grpc://, grpcs://, http:// or https://, got 'ftp://127.0.0.1:51000'"


@pytest.mark.mutation
def test_when_no_server_is_left_each_is_named_with_what_went_wrong() -> None:
    from photoseek.errors import EncoderServerWarning

    def eight_d(body: dict[str, Any]) -> dict[str, Any]:
        return {"data": [{"embedding": [1.0] + [0.0] * 7} for _ in body["data"]]}

    posts: list[int] = []

    def counted_eight_d(body: dict[str, Any]) -> dict[str, Any]:
        posts.append(1)
        return eight_d(body)

    with running_server(clip_server_http(counted_eight_d)) as other:
        with running_server(clip_server_http(unit_vectors)) as first:
            encoder = CLIPEncoder(mode="service", model_name=None, server=f"{first},{other}", retries=0)
        with pytest.warns(EncoderServerWarning), pytest.raises(EncoderError) as none_left:
            encoder.encode_texts(["a red circle"])  # the first is gone, the other serves 8-d vectors
        contacted = len(posts)
        with pytest.raises(EncoderError, match="serves another model"):
            encoder.encode_texts(["a red circle"])
        encoder.close()
    assert str(none_left.value).startswith(f"no CLIP server answered: cannot reach the CLIP server at {first}: ")
    assert str(none_left.value).endswith(f"; {other}: serves another model")
    assert contacted == 1 and len(posts) == 1  # a server of another model is set aside for good: never asked again


@pytest.mark.mutation
def test_when_every_server_is_set_aside_the_one_due_back_first_is_tried_first() -> None:
    from photoseek.errors import EncoderServerWarning

    failing = {"a": False, "b": False}
    posts: list[str] = []

    def server(name: str) -> FastAPI:
        def answer(body: dict[str, Any]) -> Any:
            posts.append(name)
            return JSONResponse({}, status_code=500) if failing[name] else unit_vectors(body)
        return clip_server_http(answer)

    with running_server(server("a")) as a, running_server(server("b")) as b:
        encoder = CLIPEncoder(mode="service", model_name=None, server=f"{a}/ , {b}", retries=0)
        assert encoder.backend.build == {"library": "service", "server": f"{a},{b}"}  # what the collection records
        failing.update(a=True, b=True)
        posts.clear()
        with pytest.warns(EncoderServerWarning), pytest.raises(EncoderError, match="^no CLIP server answered"):
            encoder.encode_texts(["a red circle"])
        set_aside_first = posts[0]
        assert sorted(posts) == ["a", "b"]
        failing.update(a=False, b=False)  # both back before either is due
        posts.clear()
        assert encoder.encode_texts(["a red circle"]).shape == (1, 4)
        encoder.close()
    assert posts[0] == set_aside_first


@pytest.mark.mutation
@pytest.mark.parametrize("server", [None, "", ",", " , "])
def test_service_mode_without_a_server_says_how_to_name_one(server: str | None) -> None:
    from photoseek.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as refused:
        CLIPEncoder(mode="service", model_name=None, server=server)
    assert str(refused.value) == "service mode needs a server: --clip-server grpc://host:51000"


@pytest.mark.mutation
def test_a_refused_batch_of_two_is_split_and_a_refused_single_image_raises() -> None:
    """One bad image fails the server's whole batch: the client resends one by one and marks only the bad one."""
    from photoseek.errors import EncoderRejectedError

    def picky(body: dict[str, Any]) -> JSONResponse:
        for doc in body["data"]:
            if "blob" in doc and Image.open(io.BytesIO(base64.b64decode(doc["blob"]))).width < 100:
                return JSONResponse({"header": {"status": {"code": 1, "description": "too small"}}})
        return JSONResponse(unit_vectors(body))

    with running_server(clip_server_http(picky)) as url:
        backend = CLIPEncoder(mode="service", model_name=None, server=url, retries=0).backend
        good, bad = (backend.prepare_image(Image.new("RGB", (side, side), (9, 9, 9))) for side in (200, 50))
        rows = backend.embed_images([good, bad])
        with pytest.raises(EncoderRejectedError, match="too small"):
            backend.embed_images([bad])
        backend.close()
    assert rows.shape == (2, 4) and np.array_equal(rows[0], [1, 0, 0, 0]) and np.isnan(rows[1]).all()


@contextmanager
def stub_grpc_server(ready: bool, process: Any, not_ready: str = "executor clip_t is loading") -> Iterator[str]:
    """A gRPC server with only the two RPCs our client needs, misbehaving as told."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    status = jp.Status(code=jp.SUCCESS if ready else jp.ERROR, description="" if ready else not_ready)
    handlers = [
        grpc.method_handlers_generic_handler("jina.JinaGatewayDryRunRPC", {"dry_run": grpc.unary_unary_rpc_method_handler(
            lambda *_: status, jp.Empty.FromString, jp.Status.SerializeToString)}),
        grpc.method_handlers_generic_handler("jina.JinaSingleDataRequestRPC", {"process_single_data": grpc.unary_unary_rpc_method_handler(
            process, jp.DataRequest.FromString, jp.DataRequest.SerializeToString)})]
    server = grpc.server(ThreadPoolExecutor(2), handlers=handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.mark.mutation
def test_slow_grpc_server_times_out() -> None:
    def slow(request: object, context: object) -> object:
        time.sleep(5)
        return request

    started = time.time()
    with stub_grpc_server(True, slow) as url, pytest.raises(EncoderError, match="did not answer in time"):
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=url, timeout=0.5, retries=0)
    assert time.time() - started < 4


@pytest.mark.mutation
def test_a_grpc_answer_missing_a_document_is_refused() -> None:
    def loses_the_last(request: Any, context: object) -> Any:
        assert request.parameters.fields["drop_image_content"].bool_value  # our images need not come back
        answer = jp.DataRequest()
        answer.CopyFrom(request)
        if len(answer.data.docs.docs) > 1:
            del answer.data.docs.docs[-1]
        for doc in answer.data.docs.docs:
            jp.write_array(doc.embedding, np.ones(64, dtype=np.float32))
        return answer

    with stub_grpc_server(True, loses_the_last) as url:
        encoder = CLIPEncoder(mode="service", model_name=TEST_MODEL, server=url, retries=0)
        assert encoder.encode_texts(["one"]).shape == (1, 64)
        with pytest.raises(EncoderError, match="^the CLIP server answered without an embedding for every item$"):
            encoder.encode_texts(["one", "two", "three"])
        encoder.close()


@pytest.mark.mutation
@pytest.mark.parametrize("refusal,detail", [({"description": "too small"}, "too small"),
                                            ({"exception": "ValueError"}, "ValueError")])  # no description: the exception's name
def test_a_batch_the_grpc_server_refuses_is_named_with_its_reason(refusal: dict[str, str], detail: str) -> None:

    def answer(request: Any, context: object) -> Any:
        reply = jp.DataRequest()
        reply.CopyFrom(request)
        if request.data.docs.docs[0].text == "refuse me":
            reply.header.status.code = jp.ERROR
            reply.header.status.description = refusal.get("description", "")
            reply.header.status.exception.name = refusal.get("exception", "")
            return reply
        for doc in reply.data.docs.docs:
            jp.write_array(doc.embedding, np.ones(8, dtype=np.float32))
        return reply

    with stub_grpc_server(True, answer) as url:
        assert refusal_of("refuse me", url) == f"the CLIP server could not encode the batch: {detail}"


@pytest.mark.mutation
def test_a_grpc_answer_in_another_document_form_is_named() -> None:
    def as_bytes(request: Any, context: object) -> Any:
        reply = jp.DataRequest()
        reply.CopyFrom(request)
        reply.data.docs_bytes = b"\x00"  # DocArray's serialised form, which clip-client can ask for; we do not
        return reply

    with stub_grpc_server(True, as_bytes) as url, pytest.raises(EncoderError) as refused:
        CLIPEncoder(mode="service", model_name=None, server=url, retries=0)
    assert str(refused.value) == "the CLIP server answered with documents in a form other than protobuf"


@pytest.mark.mutation
def test_grpcs_speaks_tls(encoder_urls: dict[str, str]) -> None:
    """grpcs:// is gRPC over TLS: against our plain-text server the handshake fails, it is not sent in clear."""
    over_tls = encoder_urls["grpc"].replace("grpc://", "grpcs://")
    with pytest.raises(EncoderError, match=f"^cannot reach the CLIP server at {over_tls} "):
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=over_tls, retries=0, timeout=5)


@pytest.mark.mutation
@pytest.mark.parametrize("description,said", [("executor clip_t is loading", "executor clip_t is loading"),
                                              ("", "dry_run failed")])
def test_grpc_server_not_ready_is_a_clear_error(description: str, said: str) -> None:
    with stub_grpc_server(False, lambda request, context: request, not_ready=description) as url, \
            pytest.raises(EncoderError) as not_ready:
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=url)
    assert str(not_ready.value) == f"the CLIP server at {url} is not ready: {said}"


@pytest.mark.mutation
def test_a_grpc_call_the_server_refuses_is_not_retried_as_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    import grpc

    waits: list[float] = []
    monkeypatch.setattr("photoseek.encoders.service.time.sleep", waits.append)

    def refuse(request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such executor")

    with stub_grpc_server(True, refuse) as url, pytest.raises(EncoderError) as refused:
        CLIPEncoder(mode="service", model_name=None, server=url, retries=3)
    assert str(refused.value) == f"the CLIP server at {url} refused the call: INVALID_ARGUMENT no such executor"
    assert waits == []  # a refusal is an answer: asking again would get the same one


@pytest.mark.mutation
def test_an_image_our_grpc_server_rejects_fails_alone(encoder_urls: dict[str, str], scenes: Path) -> None:
    """The server fails a request with one undecodable blob in it; the client resends one by one and marks it."""
    encoder = CLIPEncoder(mode="service", model_name=TEST_MODEL, server=encoder_urls["grpc"])
    good = (scenes / "scene_00000.png").read_bytes()
    rows = encoder.backend.embed_images([good, b"\x89PNG but not one", good])
    assert np.isnan(rows[1]).all() and np.isfinite(rows[[0, 2]]).all()
    assert float(rows[0] @ rows[2]) == pytest.approx(float(rows[0] @ rows[0]), abs=1e-5)
    encoder.close()


@pytest.mark.mutation
def test_an_image_the_server_rejects_fails_alone(test_encoder: CLIPEncoder, tmp_path: Path, scenes: Path) -> None:
    """A server that refuses any image narrower than 100 px fails the whole batch; the client finds the one."""
    real = create_encoder_app(test_encoder)
    picky = FastAPI()

    @picky.get("/dry_run")
    def ready() -> dict[str, int]:
        return {"code": 0}

    @picky.post("/post")
    async def post(request: Request) -> JSONResponse:
        body = await request.json()
        for doc in body["data"]:
            if "blob" in doc and Image.open(io.BytesIO(base64.b64decode(doc["blob"]))).width < 100:
                return JSONResponse({"data": None, "header": {"status": {"code": 1, "description": "too small"}}})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=real), base_url="http://encoder") as client:
            return JSONResponse((await client.post("/post", json=body)).json())

    # named to come first, so that the batch's other photos come after the refused one
    Image.open(scenes / "scene_00000.png").resize((60, 60)).save(scenes / "0_tiny.png")
    with running_server(picky) as url, ImageSearchEngine(mode="service", model_name=TEST_MODEL, clip_server=url,
                                                       milvus_uri=str(tmp_path / "p.db")) as engine:
        summary = engine.index_directory(scenes)
    assert summary.indexed == 24
    assert [(Path(f.path).name, f.reason) for f in summary.failed] == [("0_tiny.png", "the encoder could not encode it")]


@pytest.mark.mutation
def test_photos_reach_the_server_at_least_at_its_models_input_size(test_encoder: CLIPEncoder, encoder_urls: dict[str, str],
                                                                  tmp_path: Path) -> None:
    """clip-server tells neither its model nor its input size: the input size comes from the model named
    (ViT-L-14-336 takes 336 px, the SigLIP2-512 models 512). Ours tells it, and its word comes first. Before, the
    client decoded every photo for 224 px, so a 1080p frame reached a 336 px model at 270 px, to be scaled up there."""
    real = create_encoder_app(test_encoder)
    received: list[tuple[int, int]] = []
    status: dict[str, object] = {}  # what the front says at /status; nothing (404) is what clip-server says
    front = FastAPI()  # our server behind a front that says what the test sets

    @front.get("/dry_run")
    def ready() -> dict[str, int]:
        return {"code": 0}

    @front.get("/status")
    def says() -> Response:
        if "page" in status:  # a proxy that answers every path with its own page, not JSON
            return HTMLResponse(str(status["page"]))
        return JSONResponse(status, status_code=200 if status else 404)

    @front.post("/post")
    async def post(request: Request) -> JSONResponse:
        body = await request.json()
        received.extend(Image.open(io.BytesIO(base64.b64decode(doc["blob"]))).size for doc in body["data"] if "blob" in doc)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=real), base_url="http://encoder") as client:
            return JSONResponse((await client.post("/post", json=body)).json())

    photos = tmp_path / "photos"
    photos.mkdir()
    frame = Image.new("RGB", (1920, 1080))
    frame.paste((200, 40, 40), (600, 200, 1300, 900))
    frame.save(photos / "frame.jpg", quality=90)  # a JPEG decoded in draft: 1/4 scale gives 480x270
    # no word from the server: the model named decides; a model whose config is not here (hf-hub) gets 224
    cases: list[tuple[str | None, dict[str, object], int]] = [
        (None, {}, 224), ("ViT-L-14-336::openai", {}, 336), ("ViT-SO400M-16-SigLIP2-512::webli", {}, 512),
        ("hf-hub:example/tiny", {}, 224), (None, {"model": "hf-hub:example/tiny", "image_size": 336}, 336),
        (None, {"model": "hf-hub:example/tiny", "image_size": 100_000}, 224),  # not a model's: ignored
        ("ViT-L-14-336::openai", {"page": "<html><body>Welcome</body></html>"}, 336)]
    shortest = []
    with running_server(front) as url:
        for index, (model, said, side) in enumerate(cases):
            received.clear()
            status.clear()
            status.update(said)
            with ImageSearchEngine(mode="service", model_name=model, clip_server=url,
                                   milvus_uri=str(tmp_path / f"{index}.db")) as engine:
                assert engine.encoder.image_size == side, (model, said)
                assert engine.index_directory(photos).indexed == 1
            shortest.append(min(received[-1]))
    # the draft's 1/4 (270 px) serves a 224 px model; a 336 px one gets 1/2 (540) sent at 448, a 512 px one at 512
    assert shortest == [270, 448, 512, 270, 448, 270, 448]

    for scheme in ("http", "grpc"):  # what our server says, over both protocols
        server = CLIPEncoder(mode="service", model_name=None, server=encoder_urls[scheme])
        assert server.backend._connection.server_info() == (TEST_MODEL, 64)  # type: ignore[attr-defined]
        assert (server.model_name, server.image_size) == (TEST_MODEL, 64)
        server.close()


@pytest.mark.mutation
@pytest.mark.parametrize(("name", "side"), [
    ("ViT-B-32::openai", 224), ("ViT-L-14-336::openai", 336), ("ViT-L-14-336", 336), ("RN50x4::openai", 288),
    ("ViT-SO400M-16-SigLIP2-512::webli", 512), ("shapes-tiny::v1", 64),
    ("CN-CLIP/ViT-L-14-336", 336), ("CN-CLIP/RN50", 224), ("CN-CLIP/ViT-L-14-336::/models/clip_cn_vit-l-14-336.pt", 336),
    ("CN-CLIP/ViT-Z-99", None), ("hf-hub:timm/ViT-B-16-SigLIP", None), ("no-such-model::x", None), ("", None)])
def test_a_named_models_input_side_comes_from_its_own_config(name: str, side: int | None) -> None:
    """What the service client decodes photos for when the server does not say (clip-server): open_clip's bundled
    config of the architecture, cn_clip's table, the built-in model's config; None (then 224) for any other name."""
    from photoseek.encoders.service import model_input_size

    assert model_input_size(name) == side


@pytest.mark.mutation
def test_a_model_name_cannot_point_the_config_lookup_at_another_file(tmp_path: Path) -> None:
    """A model name can come from a server (ours names its model): it only ever names a bundled config."""
    import importlib.util
    import json
    import os

    from photoseek.encoders.service import model_input_size

    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations
    configs = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    (tmp_path / "planted.json").write_text(json.dumps({"vision_cfg": {"image_size": 320}}))
    outside = os.path.relpath(tmp_path / "planted", configs)
    assert outside.startswith("..")
    assert model_input_size(outside + "::x") is None and model_input_size(outside) is None


class ThirtyTwoDimensions:
    """A deterministic stand-in for a server-side model that answers 32-d vectors under the test model's name."""

    model_name, dim, image_size, batches_in_flight = TEST_MODEL, 32, 64, 1
    build: dict[str, object] = {}

    def __init__(self, **_: object) -> None:
        pass

    def prepare_image(self, image: Image.Image) -> Image.Image:
        return image

    def embed_images(self, prepared: list[Image.Image]) -> np.ndarray:
        return np.stack([np.resize(np.asarray(i.resize((4, 4)), dtype=np.float32), 32) + 1 for i in prepared])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([np.resize(np.frombuffer(t.encode().ljust(32), dtype=np.uint8).astype(np.float32), 32) for t in texts])

    def close(self) -> None:
        pass


@pytest.mark.mutation
@pytest.mark.parametrize("rebuild", [False, True])
def test_a_server_whose_vectors_do_not_fit_the_collection_is_refused(rebuild: bool, tmp_path: Path, scenes: Path) -> None:
    from clip_encoder import register_backend

    register_backend("thirty-two")(ThirtyTwoDimensions)
    grpc_server, port = create_grpc_server(CLIPEncoder(mode="thirty-two"), "127.0.0.1:0")
    grpc_server.start()
    uri = str(tmp_path / "m.db")
    try:
        with ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=uri, device="cpu") as local:
            local.index_directory(scenes)
        # the server names the same model, so only the dimension can tell
        with ImageSearchEngine(mode="service", clip_server=f"grpc://127.0.0.1:{port}", milvus_uri=uri, rebuild=rebuild) as engine:
            if not rebuild:
                with pytest.raises(CollectionMismatchError, match=r"answers 32-d vectors .*holds 64-d vectors"):
                    engine.search("a red circle")
                with pytest.raises(CollectionMismatchError, match="answers 32-d vectors"):
                    engine.index_directory(scenes)
                assert engine.get_stats()["total_images"] == 24  # nothing was lost
            else:  # --rebuild is the way out: the collection is re-made at the server's dimension
                assert engine.index_directory(scenes).indexed == 24 and engine.get_stats()["dim"] == 32
    finally:
        grpc_server.stop(grace=None)


def test_the_cli_indexes_and_searches_through_a_grpc_server(encoder_urls: dict[str, str], tmp_path: Path,
                                                            scenes: Path) -> None:
    """The issue's commands: index through the server, then search with the server named once in the environment."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "PHOTOSEEK_HOME": str(tmp_path / "home")}
    env.pop("PHOTOSEEK_MILVUS_URI", None)
    cli = [sys.executable, str(ROOT / "image_search.py")]
    indexed = subprocess.run([*cli, "--mode", "index", "--encode-mode", "service", "--clip-server", encoder_urls["grpc"],
                              "--image-dir", str(scenes), "-q"], env=env, capture_output=True, text=True, timeout=300)
    assert indexed.returncode == 0 and "indexed 24" in indexed.stdout, indexed.stderr
    query = captions_of(scenes)["scene_00003.png"]["zh"]
    searched = subprocess.run([*cli, "--mode", "search", "--query", query, "--top-k", "5", "--json"],
                              env={**env, "PHOTOSEEK_CLIP_SERVER": encoder_urls["grpc"]}, capture_output=True, text=True,
                              timeout=300)
    assert searched.returncode == 0, searched.stderr
    with ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=str(tmp_path / "local.db"), device="cpu") as local:
        local.index_directory(scenes)
        expected = local.search(query, top_k=5)
    assert [Path(r["path"]).name for r in json.loads(searched.stdout)] == [Path(r.path).name for r in expected]
    stats = subprocess.run([*cli, "--mode", "stats", "--json"], env={**env, "PHOTOSEEK_CLIP_SERVER": encoder_urls["grpc"]},
                           capture_output=True, text=True, timeout=300)
    assert json.loads(stats.stdout)["mode"] == "service" and json.loads(stats.stdout)["model"] == TEST_MODEL


@pytest.mark.mutation
def test_a_server_that_dies_mid_index_loses_nothing(test_encoder: CLIPEncoder, tmp_path: Path, scenes: Path) -> None:
    """The run stops with a clear error; committed batches stay; against a server again, the rest is indexed."""
    first, port = create_grpc_server(test_encoder, "127.0.0.1:0")
    first.start()

    def stop_after_a_few(progress: Any) -> None:
        if progress.done == 17:  # with up to three batches of four in flight, at least one is stored by then
            first.stop(grace=None)

    uri = str(tmp_path / "d.db")
    with ImageSearchEngine(mode="service", clip_server=f"grpc://127.0.0.1:{port}", milvus_uri=uri, batch_size=4) as engine:
        with pytest.raises(EncoderError, match="cannot reach the CLIP server"):
            engine.index_directory(scenes, progress=stop_after_a_few)
        kept = engine.get_stats()["total_images"]
    assert 4 <= kept < 24
    second, port = create_grpc_server(test_encoder, "127.0.0.1:0")
    second.start()
    try:
        with ImageSearchEngine(mode="service", clip_server=f"grpc://127.0.0.1:{port}", milvus_uri=uri, batch_size=4) as engine:
            summary = engine.index_directory(scenes)
            assert (summary.unchanged, summary.indexed) == (kept, 24 - kept)
            assert engine.get_stats()["total_images"] == 24
    finally:
        second.stop(grace=None)


@pytest.mark.mutation
def test_large_non_square_photos_give_local_modes_vectors(encoder_url: str, tmp_path: Path, scenes: Path) -> None:
    """Photos larger than the 448 px the client sends take its downscale + JPEG branch. Measured with the
    test model on such scenes: cosine to local mode >= 0.998, while a mirrored image gives 0.89 and a
    red/blue swap -0.34 (min over the scenes), so a bar of 0.995 catches either mistake."""
    big = tmp_path / "big"
    big.mkdir()
    for number, source in enumerate(sorted(scenes.glob("scene_0000*.png"))):
        large = Image.open(source).convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC)
        # PNGs reach the client whole (no draft decoding), so they take the downscale branch; JPEGs are drafted first
        large.save(big / f"{source.stem}.png") if number % 2 else large.save(big / f"{source.stem}.jpg", quality=92)
    vectors = {}
    for label, options in (("service", {"mode": "service", "clip_server": encoder_url}),
                           ("local", {"model_name": TEST_MODEL, "device": "cpu", "runtime": TEST_RUNTIME})):
        with ImageSearchEngine(milvus_uri=str(tmp_path / f"{label}.db"), **options) as engine:  # type: ignore[arg-type]
            assert engine.index_directory(big).indexed == 10
            rows = engine.store.get([r.id for r in engine.search("shape", top_k=10)], with_vectors=True)
            vectors[label] = {row["path"]: np.asarray(row["vector"], dtype=np.float32) for row in rows}
    cosines = [float(vectors["service"][path] @ vectors["local"][path]) for path in vectors["local"]]
    assert len(cosines) == 10 and min(cosines) >= 0.995, cosines


@pytest.mark.parametrize("body,message", [
    ([1, 2, 3], "expected"), ("x", "expected"), ({"data": [{"blob": 123}]}, "base64 text"),
    ({"data": [{"uri": "data:image/png;base64,@@@not-base64@@@"}]}, "not valid base64"),
    ({"data": [{"uri": "data:image/png,rawbytes"}]}, "base64 encoded"), ({"data": [{"other": 1}]}, "needs a 'text'"),
])
def test_malformed_http_requests_are_client_errors(encoder_urls: dict[str, str], body: object, message: str) -> None:
    response = httpx.post(encoder_urls["http"] + "/post", json=body)
    assert response.status_code == 400 and message in response.json()["header"]["status"]["description"], response.text
    not_json = httpx.post(encoder_urls["http"] + "/post", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400


def test_an_http_post_of_no_documents_or_a_failing_model_is_answered(test_encoder: CLIPEncoder,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No documents get no vectors (not a hang); a model that fails answers 500 naming the failure."""
    with running_server(create_encoder_app(test_encoder, MicroBatcher(test_encoder))) as url:
        empty = httpx.post(url + "/post", json={"data": []}, timeout=30)
        assert empty.status_code == 200 and empty.json()["data"] == []

        def failing_encode_texts(texts: list[str]) -> np.ndarray:
            raise EncoderError("the model ran out of memory")

        monkeypatch.setattr(test_encoder, "encode_texts", failing_encode_texts)
        failed = httpx.post(url + "/post", json={"data": [{"text": "a"}, {"text": "b"}]}, timeout=30)
    assert failed.status_code == 500, failed.text
    assert failed.json()["header"]["status"]["description"] == "the model ran out of memory"


def _tensor_doc(request: object, array: np.ndarray | None = None, dtype: str | None = None) -> None:
    doc = request.data.docs.docs.add(id="t")  # type: ignore[attr-defined]
    if array is not None:
        jp.write_array(doc.tensor, array)
    if dtype is not None:
        doc.tensor.dense.dtype = dtype


def test_one_bad_document_in_a_grpc_stream_fails_alone(encoder_urls: dict[str, str]) -> None:
    """Ten requests on jina's Call stream, the third with a 4-D tensor, the sixth with an unknown dtype:
    those two get error answers, the other eight their vectors, and the stream ends normally."""
    import grpc

    requests = []
    for i in range(10):
        request = jp.DataRequest()
        request.header.request_id = f"r{i}"
        request.header.exec_endpoint = "/encode"
        if i == 2:
            _tensor_doc(request, np.zeros((2, 8, 8, 3), dtype=np.uint8))
        elif i == 5:
            _tensor_doc(request, np.zeros((8, 8, 3), dtype=np.uint8), dtype="<x9")
        else:
            request.data.docs.docs.add(id=f"d{i}", text=f"a red circle {i}")
        requests.append(request)
    with grpc.insecure_channel(encoder_urls["grpc"].removeprefix("grpc://")) as channel:
        call = channel.stream_stream(jp.CALL, request_serializer=jp.DataRequest.SerializeToString,
                                     response_deserializer=jp.DataRequest.FromString)
        answers = list(call(iter(requests), timeout=60))
    assert [a.header.request_id for a in answers] == [f"r{i}" for i in range(10)]
    failed = {a.header.request_id: a.header.status.description for a in answers if a.header.status.code == jp.ERROR}
    assert set(failed) == {"r2", "r5"} and "H x W" in failed["r2"] and "tensor" in failed["r5"]
    assert all(jp.read_array(a.data.docs.docs[0].embedding).shape == (64,) for a in answers if a.header.request_id not in failed)


def test_the_encoder_server_caps_requests(test_encoder: CLIPEncoder) -> None:
    import grpc

    limits = EncoderLimits(max_request_bytes=2 * 1024 * 1024, max_documents=8, max_tensor_pixels=10_000)
    batcher = MicroBatcher(test_encoder)
    with grpc_encoder_stubs(test_encoder, batcher, limits) as (single, _):
        huge = jp.DataRequest()
        huge.data.docs.docs.add(id="big", blob=b"\0" * (3 * 1024 * 1024))
        with pytest.raises(grpc.RpcError) as too_big:
            single(huge, timeout=30)
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        many = jp.DataRequest()
        for i in range(9):
            many.data.docs.docs.add(text=f"t{i}")
        assert "at most 8 documents" in single(many, timeout=30).header.status.description
        wide = jp.DataRequest()
        _tensor_doc(wide, np.zeros((200, 200, 3), dtype=np.uint8))
        assert "pixels" in single(wide, timeout=30).header.status.description
    with running_server(create_encoder_app(test_encoder, batcher, limits)) as url:
        over = httpx.post(url + "/post", json={"data": [{"text": "x"}] * 9})
        assert over.status_code == 400 and "at most 8" in over.json()["header"]["status"]["description"]
        assert httpx.post(url + "/post", content=b"x" * (3 * 1024 * 1024)).status_code == 413


def test_idle_grpc_streams_cannot_starve_the_server(test_encoder: CLIPEncoder) -> None:
    """32 open JinaRPC/Call streams that sent nothing held all 32 worker threads: encode and dry_run timed out.
    With 100 open, a one-text request is answered at once; an idle stream is ended after stream_idle_seconds."""
    import grpc

    with grpc_encoder_stubs(test_encoder, MicroBatcher(test_encoder), EncoderLimits(stream_idle_seconds=3.0)) as (single, stream):
        silent = threading.Event()

        def nothing() -> Iterator[Any]:
            silent.wait()
            return
            yield  # a generator that sends nothing until the test ends

        idle = [stream(nothing()) for _ in range(100)]
        time.sleep(0.5)  # the streams are open on the server
        started = time.perf_counter()
        answer = single(texts_request(["a red circle"]), timeout=10)
        assert time.perf_counter() - started < 1.0 and len(answer.data.docs.docs[0].embedding.dense.buffer) > 0
        ended = 0
        deadline = time.time() + 10
        for call in idle:  # each ended by the server once idle for 3 s
            with contextlib.suppress(grpc.RpcError):
                list(call)
            ended += 1
            assert time.time() < deadline
        assert ended == 100
        silent.set()


def test_a_huge_text_is_cut_before_it_is_tokenized_and_a_slow_request_is_answered(test_encoder: CLIPEncoder,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """One 55 MB text held the shared batcher 25 s (another client's text waited 23.8 s): the towers read 77
    tokens, so texts are cut to MAX_TEXT_CHARS first. A request not answered within max_request_seconds is
    answered with an error and its work dropped."""
    from photoseek.encoders.base import MAX_TEXT_CHARS, bounded_text

    words = "a red circle " * 5_000_000  # 65 MB of text
    started = time.perf_counter()
    cut = bounded_text(words)
    assert len(cut) <= MAX_TEXT_CHARS and cut.startswith("a red circle a red circle") and time.perf_counter() - started < 0.5
    assert bounded_text("a   red\n\ncircle") == "a   red\n\ncircle"  # a short text is left as it is
    assert np.allclose(test_encoder.encode_texts([words[:60_000]]), test_encoder.encode_texts([words[:6_000]]), atol=1e-6)
    seen: list[int] = []
    real = test_encoder.encode_texts
    monkeypatch.setattr(test_encoder, "encode_texts", lambda texts: (seen.extend(len(t) for t in texts), real(texts))[1])
    batcher = MicroBatcher(test_encoder)
    with grpc_encoder_stubs(test_encoder, batcher) as (single, _):
        assert len(single(texts_request([words[:20_000_000]]), timeout=60).data.docs.docs[0].embedding.dense.buffer) > 0
    with running_server(create_encoder_app(test_encoder, batcher)) as url:
        assert httpx.post(url + "/post", json={"data": [{"text": words[:20_000_000]}]}, timeout=60).status_code == 200
    assert seen and max(seen) <= MAX_TEXT_CHARS
    held = threading.Event()
    monkeypatch.setattr(test_encoder, "encode_texts", lambda texts: (held.wait(10), real(texts))[1])
    slow = EncoderLimits(max_request_seconds=1.0)
    slow_batcher = MicroBatcher(test_encoder)
    try:
        with grpc_encoder_stubs(test_encoder, slow_batcher, slow) as (single, _):
            assert "not answered within 1 s" in single(texts_request(["x"]), timeout=30).header.status.description
        with running_server(create_encoder_app(test_encoder, slow_batcher, slow)) as url:
            answer = httpx.post(url + "/post", json={"data": [{"text": "x"}]}, timeout=30)
            assert answer.status_code == 500 and "not answered within 1 s" in answer.json()["header"]["status"]["description"]
    finally:
        held.set()


@contextmanager
def grpc_encoder_stubs(encoder: CLIPEncoder, batcher: MicroBatcher,
                       limits: EncoderLimits | None = None) -> Iterator[tuple[Any, Any]]:
    """A real gRPC encoder server over `batcher` (with `limits`, else the defaults), and a client's unary and
    stream stubs for it."""
    import grpc

    server, port = create_grpc_server(encoder, "127.0.0.1:0", batcher, limits or EncoderLimits())
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=jp.CHANNEL_OPTIONS) as channel:
            yield (channel.unary_unary(jp.PROCESS_SINGLE_DATA, request_serializer=jp.DataRequest.SerializeToString,
                                       response_deserializer=jp.DataRequest.FromString),
                   channel.stream_stream(jp.CALL, request_serializer=jp.DataRequest.SerializeToString,
                                         response_deserializer=jp.DataRequest.FromString))
    finally:
        server.stop(grace=None)


def texts_request(texts: Iterable[str]) -> Any:
    request = jp.DataRequest()
    for text in texts:
        request.data.docs.docs.add(text=text)
    return request


def forgotten_texts_reaching_the_model(encoder: CLIPEncoder, monkeypatch: pytest.MonkeyPatch,
                                       before_encoding: Callable[[], None] = lambda: None) -> list[str]:
    """The texts starting with "forgotten" that the model encodes, recorded as they reach it;
    `before_encoding` runs (in the batcher's thread) before each batch holding any."""
    encoded: list[str] = []
    real_encode_texts = encoder.encode_texts

    def recording_encode_texts(texts: list[str]) -> np.ndarray:
        forgotten = [text for text in texts if text.startswith("forgotten")]
        encoded.extend(forgotten)
        if forgotten:
            before_encoding()
        return real_encode_texts(texts)

    monkeypatch.setattr(encoder, "encode_texts", recording_encode_texts)
    return encoded


@pytest.mark.parametrize(("rpc", "left_while"), [("single", "queueing"), ("single", "starting"), ("stream", "queueing")])
def test_work_queued_after_the_client_left_is_dropped(rpc: str, left_while: str, test_encoder: CLIPEncoder,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler can start, or still be queueing a request's texts, after its client cancelled (a server under
    load runs handlers late). gRPC refuses callbacks once an RPC has ended, so texts queued after that must be
    cancelled as they are queued (or not queued at all), not encoded for nobody while later requests wait."""

    from photoseek.servers.encoder_server import JinaGrpcEncoder

    server_saw_end, entered, handler_done = threading.Event(), threading.Event(), threading.Event()
    forgotten_queued: list[str] = []
    forgotten_encoded = forgotten_texts_reaching_the_model(test_encoder, monkeypatch)
    batcher = MicroBatcher(test_encoder, max_batch=8)
    real_submit = batcher.submit

    def submit_after_the_client_left(kind: str, item: Any, **options: Any) -> Any:
        if kind == "text" and item.startswith("forgotten") and left_while == "queueing":
            entered.set()
            assert server_saw_end.wait(30), "the server never saw the client leave"
            forgotten_queued.append(item)
            future = real_submit(kind, item, **options)
            # give the batcher the time a loaded server gives it: work queued untracked is taken up and encoded
            deadline = time.monotonic() + 1
            while not (future.running() or future.done()) and time.monotonic() < deadline:
                time.sleep(0.001)
            return future
        return real_submit(kind, item, **options)

    def seeing(method: Any) -> Any:  # the server's own view of when the RPC ended, through gRPC's callback
        def single(self: JinaGrpcEncoder, request: Any, context: Any) -> Any:
            if left_while == "starting":
                context.add_callback(server_saw_end.set)
                entered.set()
                assert server_saw_end.wait(30), "the server never saw the client leave"
            try:
                return method(self, request, SeenAfterTheHandler(context))
            finally:
                handler_done.set()

        def stream(self: JinaGrpcEncoder, requests: Iterator[Any], context: Any) -> Iterator[Any]:
            yield from method(self, requests, SeenAfterTheHandler(context))
        return single if rpc == "single" else stream

    class SeenAfterTheHandler:
        """The RPC's context, with the test's end signal run after the handler's own callbacks (gRPC runs them in
        the order they were added): the texts are queued once the server itself has seen the client leave."""

        def __init__(self, context: Any):
            self._context = context

        def add_callback(self, callback: Any) -> bool:
            added = self._context.add_callback(callback)
            self._context.add_callback(server_saw_end.set)
            return bool(added)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._context, name)

    monkeypatch.setattr(batcher, "submit", submit_after_the_client_left)
    name = "process_single_data" if rpc == "single" else "call"
    monkeypatch.setattr(JinaGrpcEncoder, name, seeing(getattr(JinaGrpcEncoder, name)))
    with grpc_encoder_stubs(test_encoder, batcher) as (single, stream):
        forgotten = texts_request(f"forgotten query {i}" for i in range(50))
        call = single.future(forgotten, timeout=60) if rpc == "single" else stream(iter([forgotten]), timeout=60)
        assert entered.wait(30), "the handler never started queueing"
        call.cancel()
        deadline = time.monotonic() + 30
        while len(forgotten_queued) < 50 and not handler_done.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        # the batcher is FIFO: whatever was left queued is encoded first
        answer = single(texts_request(["a red circle"]), timeout=60)
    if left_while == "queueing":
        assert len(forgotten_queued) == 50, f"only {len(forgotten_queued)} of the 50 texts were queued"
    else:
        assert handler_done.is_set(), "the late handler never returned"
    assert answer.header.status.code != jp.ERROR, answer.header.status.description
    assert forgotten_encoded == [], f"{len(forgotten_encoded)} texts of a request whose client had left were encoded"


def test_a_long_grpc_stream_keeps_no_finished_work(test_encoder: CLIPEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """clip-client sends a whole job through one stream: the server must not hold every answered request's
    vectors until the stream ends (a million images would be gigabytes), only the work still to do."""
    import gc
    import queue
    import weakref


    batcher = MicroBatcher(test_encoder, max_batch=8)
    real_submit = batcher.submit
    queued: list[weakref.ref[Any]] = []

    def recording_submit(kind: str, item: Any, **options: Any) -> Any:
        future = real_submit(kind, item, **options)
        queued.append(weakref.ref(future))
        return future

    monkeypatch.setattr(batcher, "submit", recording_submit)
    outgoing: queue.Queue[Any] = queue.Queue()
    held_after: list[int] = []
    with grpc_encoder_stubs(test_encoder, batcher) as (_, stream):
        answers = stream(iter(outgoing.get, None), timeout=60)
        for round_ in range(4):
            outgoing.put(texts_request(f"a red circle {round_} {i}" for i in range(20)))
            answer = next(answers)
            assert answer.header.status.code != jp.ERROR and len(answer.data.docs.docs) == 20
            gc.collect()
            held_after.append(sum(ref() is not None for ref in queued))
        outgoing.put(None)
        assert list(answers) == []
    assert len(queued) == 80
    # the request just answered stays with the stream's loop until the next one arrives; nothing older
    assert held_after == [20, 20, 20, 20], f"answered texts' futures still held after each round: {held_after}"


def test_work_for_an_http_client_that_disconnected_is_dropped(test_encoder: CLIPEncoder,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn lets a handler run on after its client disconnects: the texts it queued must be dropped, not
    encoded for nobody while later requests wait behind them (measured before the fix: 20 abandoned
    1,000-text posts made a one-text post wait 6 s behind 19,784 encoded texts)."""
    import json
    import socket

    in_model, release = threading.Event(), threading.Event()
    queued: list[Any] = []
    batcher = MicroBatcher(test_encoder, max_batch=8)
    real_submit = batcher.submit

    def hold_in_the_model() -> None:  # the first batch is in the model when the client leaves
        in_model.set()
        assert release.wait(30)

    forgotten_encoded = forgotten_texts_reaching_the_model(test_encoder, monkeypatch, hold_in_the_model)

    def recording_submit(kind: str, item: Any, **options: Any) -> Any:
        future = real_submit(kind, item, **options)
        queued.append(future)
        return future

    monkeypatch.setattr(batcher, "submit", recording_submit)
    try:
        with running_server(create_encoder_app(test_encoder, batcher)) as url:
            body = json.dumps({"data": [{"text": f"forgotten query {i}"} for i in range(50)]}).encode()
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=30) as client:
                client.sendall(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                assert in_model.wait(30), "the texts never reached the model"
            deadline = time.monotonic() + 10  # the client has closed its connection
            while not all(future.cancelled() for future in queued[8:]) and time.monotonic() < deadline:
                time.sleep(0.02)
            cancelled = sum(future.cancelled() for future in queued)
            release.set()
            answer = httpx.post(url + "/post", json={"data": [{"text": "a red circle"}]}, timeout=60)
    finally:
        release.set()
    assert len(queued) == 51 and answer.status_code == 200 and len(answer.json()["data"][0]["embedding"]) == 64
    assert cancelled == 42, f"{cancelled} of the 42 texts waiting behind the model's batch were cancelled"
    assert len(forgotten_encoded) == 8, f"{len(forgotten_encoded)} texts of a client that had left were encoded"


def test_work_for_requests_that_went_away_is_dropped(test_encoder: CLIPEncoder,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Abandoned requests of thousands of texts must not make the next one-text request wait behind them:
    the texts of cancelled requests are dropped, not encoded. Counted, not timed (a timed bar failed once in CI
    under load): the batcher is FIFO, so with the bug every text queued before the cancels is encoded first."""

    encoded: list[int] = []
    submitted: list[str] = []
    real_encode_texts = test_encoder.encode_texts
    batcher = MicroBatcher(test_encoder, max_batch=8)
    real_submit = batcher.submit

    def counting_encode_texts(texts: list[str]) -> np.ndarray:
        encoded.append(len(texts))
        return real_encode_texts(texts)

    def counting_submit(kind: str, item: Any, **options: Any) -> Any:
        submitted.append(kind)
        return real_submit(kind, item, **options)

    monkeypatch.setattr(test_encoder, "encode_texts", counting_encode_texts)
    monkeypatch.setattr(batcher, "submit", counting_submit)
    with grpc_encoder_stubs(test_encoder, batcher) as (single, _):
        calls = []
        for round_ in range(40):  # 1,000 texts a request: the server's cap is 1,024
            abandoned = texts_request(f"a long forgotten query number {round_} {i} " * 3 for i in range(1000))
            calls.append(single.future(abandoned, timeout=120))
        deadline = time.monotonic() + 30
        while len(submitted) < 20_000 and time.monotonic() < deadline:  # the server's 32 workers take them
            time.sleep(0.05)
        queued, encoded_before = len(submitted), sum(encoded)
        for call in calls:  # the clients give up long before their texts are encoded
            call.cancel()
        started = time.perf_counter()
        answer = single(texts_request(["a red circle"]), timeout=120)
        waited = time.perf_counter() - started
    assert queued - encoded_before > 10_000, f"only {queued - encoded_before} texts were waiting: nothing to drop"
    assert answer.header.status.code != jp.ERROR, answer.header.status.description
    assert len(answer.data.docs.docs) == 1 and list(answer.data.docs.docs[0].embedding.dense.shape) == [64]
    # measured: 0 texts after the cancels with the drop (alone and beside three busy processes); with no drop every
    # queued text (about 24,000) is encoded before the one is answered (20 s); with handlers that queued after their
    # client left left uncancelled, CI once encoded 15,991 (8.65 s). The bar leaves room for the cancels reaching the
    # server late under load (CI encoded about 1,850 texts a second); time is only reported
    encoded_after = sum(encoded) - encoded_before - 1
    assert encoded_after < 5_000, f"{encoded_after} texts of cancelled requests encoded; the answer took {waited:.2f} s"


def test_a_text_request_does_not_wait_behind_images_being_decoded(encoder_urls: dict[str, str]) -> None:
    """Three 80-megapixel images posted to the encoder's HTTP /post decode in worker threads: a one-text
    request meanwhile is answered at once (it waited 2.4 s behind them when decoding ran on the event loop)."""
    import concurrent.futures

    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((10000, 8000)).convert("RGB").save(buffer, format="PNG", compress_level=1)
    blob = base64.b64encode(buffer.getvalue()).decode("ascii")
    url = encoder_urls["http"] + "/post"

    def post_image(_: int) -> int:
        return httpx.post(url, json={"data": [{"blob": blob}]}, timeout=120).status_code

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        images = [pool.submit(post_image, i) for i in range(3)]
        time.sleep(0.3)
        waits = latencies_while(images, lambda: httpx.post(url, json={"data": [{"text": "a red circle"}]}, timeout=60).raise_for_status())
        assert [f.result() for f in images] == [200] * 3
    print(f"one-text requests while three 80 MP images decode: max {max(waits) * 1000:.0f} ms over {len(waits)}")
    assert waits and max(waits) < 0.5, waits


class CountingEncoder:
    """The real test encoder, counting the image batches it encodes (which server did the work)."""

    def __init__(self, encoder: CLIPEncoder):
        self._encoder = encoder
        self.images = 0

    def encode_prepared(self, prepared: Any) -> np.ndarray:
        self.images += len(prepared)
        return self._encoder.encode_prepared(prepared)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


@pytest.mark.mutation
def test_several_servers_share_the_batches_and_one_dying_mid_run_loses_nothing(test_encoder: CLIPEncoder, tmp_path: Path) -> None:
    """`--clip-server grpc://a,grpc://b`: both servers encode; one stops mid-run and the run finishes on
    the other, with a warning naming it; every image indexed once, with local mode's vectors."""
    from typing import cast

    from make_scenes import write_scenes

    from photoseek.errors import EncoderServerWarning

    scenes = tmp_path / "many"
    write_scenes(scenes, count=64, seed=5)  # 16 batches of 4: more than the 6 in flight, so some follow the stop

    counters = [CountingEncoder(test_encoder), CountingEncoder(test_encoder)]
    servers = [create_grpc_server(cast(CLIPEncoder, counter), "127.0.0.1:0") for counter in counters]
    for server, _ in servers:
        server.start()
    urls = [f"grpc://127.0.0.1:{port}" for _, port in servers]

    stopped: list[int] = []  # files done when the first server stopped

    def stop_the_first_after_a_few(progress: Any) -> None:
        # both servers have taken batches (progress counts files handed on, their batches may still be at a
        # server), and much work remains
        if not stopped and counters[0].images >= 4 and counters[1].images >= 4:
            stopped.append(progress.done)
            servers[0][0].stop(grace=None)

    try:
        with pytest.warns(EncoderServerWarning, match=f"{urls[0]}.*other CLIP servers"):
            with ImageSearchEngine(mode="service", clip_server=",".join(urls), milvus_uri=str(tmp_path / "s.db"), batch_size=4) as engine:
                summary = engine.index_directory(scenes, progress=stop_the_first_after_a_few)
                assert (summary.indexed, len(summary.failed)) == (64, 0)
                assert engine.get_stats()["total_images"] == 64
                queries = [c["en"] for c in list(captions_of(scenes).values())[:6]]
                remote = engine.search_batch(queries, top_k=5)
        assert stopped and stopped[0] <= 40  # stopped with work left, after both servers had taken batches
        assert counters[1].images >= 64 - counters[0].images
        assert_local_mode_gives(remote, scenes, queries, tmp_path / "l.db")
    finally:
        for server, _ in servers:
            server.stop(grace=None)


@pytest.mark.mutation
def test_a_pool_sets_a_server_of_another_model_aside_for_good(test_encoder: CLIPEncoder, tmp_path: Path, scenes: Path) -> None:
    """`--clip-server a,b` where b serves another model: b gets no batch (its vectors would not compare with
    a's), a warning names it, and the run finishes on a with local mode's results."""
    from typing import cast

    from photoseek.errors import EncoderServerWarning

    ours, foreign = CountingEncoder(test_encoder), CountingEncoder(test_encoder)
    foreign.model_name = "ViT-B-32::openai"  # what the server reports; an instance attribute wins over __getattr__
    servers = [create_grpc_server(cast(CLIPEncoder, counter), "127.0.0.1:0") for counter in (ours, foreign)]
    for server, _ in servers:
        server.start()
    urls = [f"grpc://127.0.0.1:{port}" for _, port in servers]
    try:
        with pytest.warns(EncoderServerWarning, match=f"^the CLIP server at {urls[1]} serves 'ViT-B-32::openai', 64-d, unlike {TEST_MODEL} \\(64-d\\): it gets no batches$") as said:
            with ImageSearchEngine(mode="service", clip_server=",".join(urls), milvus_uri=str(tmp_path / "p.db"), batch_size=4) as engine:
                summary = engine.index_directory(scenes)
                assert (summary.indexed, len(summary.failed)) == (24, 0)
                queries = [c["en"] for c in list(captions_of(scenes).values())[:4]]
                remote = engine.search_batch(queries, top_k=5)
        assert (ours.images, foreign.images) == (24, 0)
        assert len([w for w in said if "gets no batches" in str(w.message)]) == 1  # set aside once, not re-probed per batch
        assert_local_mode_gives(remote, scenes, queries, tmp_path / "l.db")
    finally:
        for server, _ in servers:
            server.stop(grace=None)


def stub_http_encoder(dim: int, model: str | None) -> FastAPI:
    """A server of clip-server's HTTP protocol answering `dim`-d vectors, reporting `model` on /status as ours
    does (None: no /status, as clip-server)."""
    app = FastAPI()

    @app.get("/dry_run")
    def ready() -> dict[str, int]:
        return {"code": 0}

    if model is not None:
        @app.get("/status")
        def status() -> dict[str, Any]:
            return {"model": model, "dim": dim}

    @app.post("/post")
    async def encode(request: Request) -> dict[str, Any]:
        items = (await request.json())["data"]
        return {"data": [{"embedding": [1.0] + [0.0] * (dim - 1)} for _ in items]}

    return app


@pytest.mark.mutation
@pytest.mark.parametrize("servers,warning", [
    # clip-servers, which name no model: the second serves other vectors
    ([(64, None), (32, None)], "serves 32-d vectors, unlike the others (64-d)"),
    # a server that names no model does not make the pool forget the model the first one named
    ([(64, "model-a"), (64, None), (64, "model-b")], "serves 'model-b', 64-d, unlike model-a (64-d)"),
])
def test_a_pool_names_what_a_foreign_server_serves(servers: list[tuple[int, str | None]], warning: str) -> None:
    from contextlib import ExitStack

    from photoseek.errors import EncoderServerWarning

    with ExitStack() as stack:
        urls = [stack.enter_context(running_server(stub_http_encoder(dim, model))) for dim, model in servers]
        with pytest.warns(EncoderServerWarning) as said:
            encoder = CLIPEncoder(mode="service", model_name=None, server=",".join(urls), retries=0)
            for _ in range(2 * len(urls)):  # each server's turn comes
                assert encoder.encode_texts(["a red circle"]).shape == (1, 64)
            encoder.close()
    assert [str(w.message) for w in said] == [f"the CLIP server at {urls[-1]} {warning}: it gets no batches"]


@pytest.mark.mutation
def test_a_pool_starts_without_a_down_server_and_refuses_a_foreign_one(test_encoder: CLIPEncoder, tmp_path: Path,
                                                                      scenes: Path) -> None:
    from photoseek.errors import EncoderServerWarning

    live, port = create_grpc_server(test_encoder, "127.0.0.1:0")
    live.start()
    down = f"grpc://127.0.0.1:{free_port()}"
    try:
        with pytest.warns(EncoderServerWarning, match=f"cannot reach the CLIP server at {down}"):
            with ImageSearchEngine(mode="service", clip_server=f"{down},grpc://127.0.0.1:{port}", milvus_uri=str(tmp_path / "a.db"),
                                   batch_size=4) as engine:
                assert engine.index_directory(scenes).indexed == 24
        with pytest.raises(EncoderError, match=f"no CLIP server answered: cannot reach the CLIP server at {down}"), \
                pytest.warns(EncoderServerWarning):
            ImageSearchEngine(mode="service", clip_server=f"{down},grpc://127.0.0.1:{free_port()}", milvus_uri=str(tmp_path / "b.db"))
        from photoseek.errors import InvalidArgumentError

        with pytest.raises(InvalidArgumentError, match="names a server twice"):
            ImageSearchEngine(mode="service", clip_server=f"grpc://127.0.0.1:{port},grpc://127.0.0.1:{port}/",
                              milvus_uri=str(tmp_path / "c.db"))
    finally:
        live.stop(grace=None)
