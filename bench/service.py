"""Service mode against local mode: image encoding throughput with 1 and 4 concurrent clients.

    python bench/service.py [--images 64]

Starts our encoder server (`--mode serve-encoder`, ViT-B-32 with random weights) in its own process
on loopback and measures both of its protocols (gRPC, HTTP JSON); clients send 12 MP photos from the indexing corpus (decoded and scaled here, as the
indexer does) in batches of 32. On one machine the server and its clients share the same cores, so
this measures protocol overhead, not the gain of a GPU server.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from corpus import corpus_files, make_corpus  # noqa: E402
from indexing import random_vit_b_32  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--port", type=int, default=51123)
    args = parser.parse_args()
    import httpx

    from clip_encoder import CLIPEncoder
    from image_loading import load_rgb

    model = random_vit_b_32()
    files = corpus_files(make_corpus(100), min(args.images, 100))
    images = [load_rgb(f, min_side=224) for f in files]
    server = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "serve-encoder", "--model", str(model),
                               "--port", str(args.port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port + 1}"  # the server's HTTP JSON port; gRPC is on --port
    try:
        deadline = time.time() + 120
        while True:
            try:
                httpx.get(url + "/dry_run", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.time() > deadline or server.poll() is not None:
                    sys.exit("encoder server did not start")
                time.sleep(0.5)

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


if __name__ == "__main__":
    main()
