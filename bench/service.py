"""Service mode against local mode: image encoding throughput with 1 and 4 concurrent clients.

    python bench/service.py [--images 64]

Starts our encoder server (`--mode serve-encoder`, ViT-B-32 with random weights) in its own process
on loopback and measures both of its protocols (gRPC, HTTP JSON); clients send 12 MP photos from the
indexing corpus (decoded and scaled here, as the indexer does) in batches of 32. On one machine the
server and its clients share the same cores, so this measures protocol overhead, not the gain of a
GPU server. Where service/install-clip-server.sh has run, the same clients are then measured
against clip-server (ONNX executor, the model exported here).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from corpus import corpus_files, make_corpus  # noqa: E402
from indexing import random_vit_b_32  # noqa: E402
from servers import wait_until_ready  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--port", type=int, default=51123)
    args = parser.parse_args()
    import httpx

    from clip_encoder import CLIPEncoder
    from photoseek.indexing.decode import load_rgb

    model = random_vit_b_32()
    files = corpus_files(make_corpus(100), min(args.images, 100))
    images = [load_rgb(f, min_side=224) for f in files]
    server = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "serve-encoder", "--model", str(model),
                               "--port", str(args.port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port + 1}"  # the server's HTTP JSON port; gRPC is on --port
    try:
        wait_until_ready(lambda: httpx.get(url + "/dry_run", timeout=1).raise_for_status(), server, "encoder server", 120,
                         (httpx.HTTPError,))

        def run(encoder: CLIPEncoder, clients: int) -> float:
            prepared = [encoder.prepare_image(im) for im in images]
            encoder.encode_prepared(prepared[:2])
            started = time.perf_counter()
            threads = [threading.Thread(target=encoder.encode_prepared, args=(prepared,)) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return clients * len(prepared) / (time.perf_counter() - started)

        local = CLIPEncoder(mode="local", model_name=str(model))
        for clients in (1, 4):
            print(f"local,        {clients} client(s): {run(local, clients):6.1f} images/s")
        local.close()
        for server_url in (f"grpc://127.0.0.1:{args.port}", url):
            service = CLIPEncoder(mode="service", model_name=str(model), server=server_url)
            for clients in (1, 4):
                print(f"service {server_url.split(':')[0]:4}, {clients} client(s): {run(service, clients):6.1f} images/s")
            service.close()
    finally:
        server.send_signal(2)
        server.wait(timeout=30)
    if CLIP_SERVER_PYTHON.exists():
        measure_clip_server(model, args.port + 2, run)


CLIP_SERVER_PYTHON = ROOT / ".venv-clip-server" / "bin" / "python"


def measure_clip_server(model: Path, port: int, run: Any) -> None:
    """The same clients against clip-as-service's clip-server (ONNX executor, the model exported here), over gRPC."""
    import os
    import signal

    from clip_encoder import CLIPEncoder
    from photoseek.errors import EncoderError

    onnx = model.parent / (model.name + "-onnx")
    if not (onnx / "visual.onnx").exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "export_onnx.py"), str(model), str(onnx)], check=True,
                       capture_output=True)
    sys.path.insert(0, str(ROOT / "tools"))
    from clip_server_flow import write_onnx_flow

    flow = write_onnx_flow(model.parent / "clip-server-bench.yml", onnx, grpc_port=port, http_port=0)
    env = {**os.environ, "NO_VERSION_CHECK": "1", "JINA_OPTOUT_TELEMETRY": "1", "JINA_HIDE_SURVEY": "1"}
    server = subprocess.Popen([str(CLIP_SERVER_PYTHON), "-m", "clip_server", str(flow)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        service = wait_until_ready(
            lambda: CLIPEncoder(mode="service", model_name=str(model), server=f"grpc://127.0.0.1:{port}", retries=0),
            server, "clip-server", 180, (EncoderError,))
        for clients in (1, 4):
            print(f"clip-server grpc, {clients} client(s): {run(service, clients):6.1f} images/s")
        service.close()
    finally:
        os.killpg(server.pid, signal.SIGINT)  # SIGTERM orphans its workers
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
