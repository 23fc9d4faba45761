"""Service mode against our own encoder server over real HTTP (clip-as-service's JSON protocol)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import httpx
import pytest
from conftest import TEST_MODEL, captions_of
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from http_server import free_port, running_server
from PIL import Image

from clip_encoder import CLIPEncoder
from encoder_server import create_encoder_app
from errors import EncoderError, ModelLoadError
from image_search import ImageSearchEngine


@pytest.fixture(scope="module")
def encoder_url(test_encoder: CLIPEncoder):  # type: ignore[no-untyped-def]
    with running_server(create_encoder_app(test_encoder)) as url:
        yield url


def test_protocol_status_and_errors(encoder_url: str) -> None:
    assert httpx.get(encoder_url + "/dry_run").json()["code"] == 0
    assert httpx.get(encoder_url + "/status").json() == {"model": TEST_MODEL, "dim": 64, "image_size": 64}
    body = httpx.post(encoder_url + "/post", json={"execEndpoint": "/encode", "data": [{"text": "a red circle"}]}).json()
    assert body["header"]["status"] is None and len(body["data"][0]["embedding"]) == 64
    bad = httpx.post(encoder_url + "/post", json={"execEndpoint": "/encode", "data": [{"blob": base64.b64encode(b"junk").decode()}]})
    assert bad.status_code == 200 and "not a recognised image format" in bad.json()["header"]["status"]["description"]
    local_file = httpx.post(encoder_url + "/post", json={"data": [{"uri": "/etc/passwd"}]}).json()
    assert "reads no files" in local_file["header"]["status"]["description"]


def test_service_mode_gives_local_mode_results(encoder_url: str, tmp_path: Path, scenes: Path) -> None:
    (scenes / "corrupt.png").write_bytes(b"\x89PNG not really")
    queries = [c["en"] for c in list(captions_of(scenes).values())[:6]] + ["一个大的红色圆形"]
    with ImageSearchEngine(mode="service", clip_server=encoder_url, milvus_uri=str(tmp_path / "s.db")) as service:
        assert service.model_name == TEST_MODEL  # taken from the server
        summary = service.index_directory(scenes)
        assert summary.indexed == 24 and [Path(f.path).name for f in summary.failed] == ["corrupt.png"]
        remote = service.search_batch(queries, top_k=5)
        assert service.get_stats()["mode"] == "service"
    with ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(tmp_path / "l.db"), device="cpu") as local:
        local.index_directory(scenes)
        here = local.search_batch(queries, top_k=5)
    for a, b in zip(remote, here, strict=True):
        assert [r.path for r in a] == [r.path for r in b]
        assert [round(r.score, 4) for r in a] == [round(r.score, 4) for r in b]


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


def test_server_down_is_a_clear_error() -> None:
    started = time.time()
    with pytest.raises(EncoderError, match="cannot reach the CLIP server.*is it running"):
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=f"http://127.0.0.1:{free_port()}", retries=1)
    assert time.time() - started < 10


def test_wrong_model_on_the_server_is_refused(encoder_url: str) -> None:
    with pytest.raises(ModelLoadError, match="serves 'shapes-tiny::v1', not 'ViT-B-32::openai'"):
        CLIPEncoder(mode="service", model_name="ViT-B-32::openai", server=encoder_url)


def test_slow_server_times_out() -> None:
    app = FastAPI()

    @app.get("/dry_run")
    def ready() -> dict[str, int]:
        return {"code": 0}

    @app.post("/post")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(5)
        return {}

    with running_server(app) as url, pytest.raises(EncoderError, match="did not answer in time"):
        CLIPEncoder(mode="service", model_name=TEST_MODEL, server=url, timeout=0.5, retries=0)


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

    Image.open(scenes / "scene_00000.png").resize((60, 60)).save(scenes / "tiny.png")
    with running_server(picky) as url, ImageSearchEngine(mode="service", model_name=TEST_MODEL, clip_server=url,
                                                       milvus_uri=str(tmp_path / "p.db")) as engine:
        summary = engine.index_directory(scenes)
    assert summary.indexed == 24
    assert [(Path(f.path).name, f.reason) for f in summary.failed] == [("tiny.png", "the encoder could not encode it")]
