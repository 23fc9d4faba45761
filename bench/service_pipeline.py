"""Service-mode indexing over a network with latency: one batch at the server at a time vs two or three.

    python bench/service_pipeline.py [--images 2000] [--one-way-ms 0 10 25]

A remote GPU encodes a batch in tens of milliseconds, about a round trip over a network, so a
client that waits for each answer before sending the next batch leaves the GPU idle half the time.
This machine has no GPU and no netem, so: our encoder server with the small test model (its
compute per batch is short, as a GPU's would be) behind a TCP proxy that delays every chunk by a
fixed one-way latency, and the same engine indexing the same scenes with 1, 2 and 3 batches in flight
(service mode's default is 3).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from servers import wait_until_ready  # noqa: E402


def start_delaying_proxy(target_port: int, one_way_seconds: float) -> int:
    """A TCP proxy on a free port that forwards to target_port, each chunk after `one_way_seconds`."""
    loop = asyncio.new_event_loop()
    ready: list[int] = []

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                # a deadline per chunk, not a sleep per chunk: latency without throttling, order kept
                loop.call_later(one_way_seconds, writer.write, chunk)
        finally:
            loop.call_later(one_way_seconds, writer.close)

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer))

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        ready.append(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True).start()
    while not ready:
        time.sleep(0.01)
    return ready[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--one-way-ms", type=float, nargs="+", default=[0.0, 10.0, 25.0])
    parser.add_argument("--port", type=int, default=51133)
    args = parser.parse_args()

    from clip_encoder import CLIPEncoder
    from image_search import ImageSearchEngine
    from photoseek.errors import EncoderError

    work = Path(tempfile.mkdtemp(prefix="service-pipeline-"))
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_scenes.py"), "--count", str(args.images), "--seed", "5",
                    str(work / "scenes")], check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "serve-encoder", "--model",
                               "shapes-tiny::v1", "--port", str(args.port)], stderr=subprocess.DEVNULL)
    try:
        wait_until_ready(lambda: CLIPEncoder(mode="service", model_name="shapes-tiny::v1",
                                             server=f"grpc://127.0.0.1:{args.port}", retries=0).close(),
                         server, "encoder server", 60, (EncoderError,))
        for one_way in args.one_way_ms:
            proxy = start_delaying_proxy(args.port, one_way / 1000)
            rates = {}
            for in_flight in (1, 2, 3):
                encoder = CLIPEncoder(mode="service", model_name="shapes-tiny::v1", server=f"grpc://127.0.0.1:{proxy}",
                                      batches_in_flight=in_flight)
                db = work / f"run-{one_way}-{in_flight}.db"
                with ImageSearchEngine(encoder=encoder, milvus_uri=str(db)) as engine:
                    started = time.perf_counter()
                    summary = engine.index_directory(work / "scenes")
                    rates[in_flight] = summary.indexed / (time.perf_counter() - started)
                encoder.close()
                print(f"one-way {one_way:4.0f} ms, {in_flight} batch(es) in flight: {rates[in_flight]:7.1f} images/s")
            print(f"one-way {one_way:4.0f} ms: ratio 2 vs 1 in flight {rates[2] / rates[1]:.2f}, 3 vs 1 {rates[3] / rates[1]:.2f}")
    finally:
        server.send_signal(2)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
