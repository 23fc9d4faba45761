"""Service mode against a real clip-as-service server (clip-server 0.8.3 in its own venv, ONNX executor,
offline), serving a small random model with ViT-B-32's interface exported by tools/export_onnx.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from clip_server_flow import write_onnx_flow  # noqa: E402
from conftest import ROOT, captions_of
from http_server import free_port
from PIL import Image

from clip_encoder import CLIPEncoder
from image_search import ImageSearchEngine

pytestmark = pytest.mark.slow
SERVER_PYTHON = ROOT / ".venv-clip-server" / "bin" / "python"


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {"embed_dim": 64, "quick_gelu": True,
           "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=64, vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"], quick_gelu=True)
    folder = tmp_path_factory.mktemp("small_vit_b_32_like")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {"size": 224}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def clip_server(small_model: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not SERVER_PYTHON.exists():
        pytest.skip("clip-server is not installed (service/install-clip-server.sh)")
    work = tmp_path_factory.mktemp("clip_server")
    subprocess.run([sys.executable, str(ROOT / "tools" / "export_onnx.py"), str(small_model), str(work / "onnx")],
                   check=True, capture_output=True, timeout=300)
    port, grpc_port = free_port(), free_port()
    write_onnx_flow(work / "flow.yml", work / "onnx", grpc_port=grpc_port, http_port=port)  # the shipped template
    env = {**os.environ, "NO_VERSION_CHECK": "1", "JINA_OPTOUT_TELEMETRY": "1", "JINA_HIDE_SURVEY": "1"}
    log = open(work / "server.log", "wb")
    process = subprocess.Popen([str(SERVER_PYTHON), "-m", "clip_server", str(work / "flow.yml")], cwd=work, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                # jina's gateway answers 200 while its executor is still starting, with the error in the body
                answer = httpx.get(url + "/dry_run", timeout=2)
                if answer.status_code == 200 and answer.json().get("code", 0) in (0, "SUCCESS"):
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError("clip-server did not start: " + (work / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(1)
        yield {"http": url, "grpc": f"grpc://127.0.0.1:{grpc_port}"}
    finally:
        # SIGINT: SIGTERM leaves clip-server's worker processes orphaned
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_clip_server_embeddings_match_local_mode(clip_server: dict[str, str], protocol: str, small_model: Path,
                                                 photos: dict[str, Path]) -> None:
    service = CLIPEncoder(mode="service", model_name=str(small_model), server=clip_server[protocol])
    local = CLIPEncoder(model_name=str(small_model), device="cpu", precision="fp32")
    texts = ["a cat on a sofa", "一只可爱的猫咪", "rocket launch " * 40]
    assert (service.encode_texts(texts) * local.encode_texts(texts)).sum(axis=1).min() >= 0.99
    images = [Image.open(p).convert("RGB") for p in photos.values()]
    cosines = (service.encode_images(images) * local.encode_images(images)).sum(axis=1)
    assert cosines.min() >= 0.99, cosines
    assert service.dim == 64 and np.allclose(np.linalg.norm(service.encode_texts(["x"]), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_index_and_search_through_clip_server_equal_local(clip_server: dict[str, str], protocol: str, small_model: Path,
                                                          tmp_path: Path, scenes: Path) -> None:
    (scenes / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    queries = [c["en"] for c in list(captions_of(scenes).values())[:5]]
    with ImageSearchEngine(mode="service", model_name=str(small_model), clip_server=clip_server[protocol],
                           milvus_uri=str(tmp_path / "svc.db")) as service:
        summary = service.index_directory(scenes)
        assert summary.indexed == 24 and [Path(f.path).name for f in summary.failed] == ["broken.jpg"]
        remote = service.search_batch(queries, top_k=5)
    with ImageSearchEngine(model_name=str(small_model), milvus_uri=str(tmp_path / "loc.db"), device="cpu",
                           precision="fp32") as local:
        local.index_directory(scenes)
        here = local.search_batch(queries, top_k=5)
    for a, b in zip(remote, here, strict=True):
        assert [r.path for r in a] == [r.path for r in b]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_image_clip_server_rejects_fails_alone(clip_server: dict[str, str], protocol: str, small_model: Path,
                                                  photos: dict[str, Path]) -> None:
    """clip-server fails a whole request over one undecodable image; the client resends one by one."""
    service = CLIPEncoder(mode="service", model_name=str(small_model), server=clip_server[protocol])
    good = photos["chelsea"].read_bytes()
    rows = service.backend.embed_images([good, b"\xff\xd8\xff not a jpeg", good])
    assert np.isnan(rows[1]).all() and np.isfinite(rows[[0, 2]]).all()
    service.close()


CLIP_CLIENT_SCRIPT = """
import json, sys
import numpy as np
from clip_client import Client
server, texts, images, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
client = Client(server)
np.save(out + "/texts.npy", client.encode(texts, batch_size=4))  # several requests on one gRPC stream
np.save(out + "/images.npy", client.encode(images, batch_size=2))  # file paths: clip-client sends their bytes
"""


def test_clip_client_talks_to_our_encoder_server(test_encoder: CLIPEncoder, scenes: Path, tmp_path: Path) -> None:
    """clip-client (jina's gRPC client, in clip-server's venv) against `--mode serve-encoder`, as against clip-server."""
    if not SERVER_PYTHON.exists():
        pytest.skip("clip-client is not installed (service/install-clip-server.sh)")
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "serve-encoder", "--model",
                               test_encoder.model_name, "--port", str(port), "--http-port", str(free_port())],
                              stderr=subprocess.PIPE, text=True)
    texts = [f"a {size} {colour} circle" for size in ("small", "large") for colour in ("red", "blue", "green")]
    texts += ["一只可爱的猫咪", "🐱 cat emoji", "rocket launch " * 40]
    images = sorted(str(p) for p in scenes.glob("*.png"))[:5]
    try:
        env = {**os.environ, "NO_VERSION_CHECK": "1", "JINA_OPTOUT_TELEMETRY": "1", "JINA_HIDE_SURVEY": "1"}
        deadline = time.time() + 60
        while True:  # the server prints its banner once the model is loaded and gRPC is listening
            try:
                done = subprocess.run([str(SERVER_PYTHON), "-c", CLIP_CLIENT_SCRIPT, f"grpc://127.0.0.1:{port}",
                                       json.dumps(texts), json.dumps(images), str(tmp_path)],
                                      env=env, capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired:
                done = None
            if done is not None and done.returncode == 0:
                break
            if time.time() > deadline or server.poll() is not None:
                raise AssertionError(f"clip-client failed: {done.stderr[-3000:] if done else 'timed out'}")
            time.sleep(2)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    text_vectors = np.load(tmp_path / "texts.npy")
    image_vectors = np.load(tmp_path / "images.npy")
    assert text_vectors.shape == (len(texts), 64) and image_vectors.shape == (len(images), 64)
    assert (text_vectors * test_encoder.encode_texts(texts)).sum(axis=1).min() > 0.9999
    local_images = test_encoder.encode_images([Image.open(p) for p in images])
    assert (image_vectors * local_images).sum(axis=1).min() > 0.999
