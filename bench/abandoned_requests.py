"""How long one text waits behind requests whose clients gave up, on both protocols of our encoder server.

    python bench/abandoned_requests.py [--abandoned 20] [--texts 1000]

Starts the encoder server (`--mode serve-encoder`, the project's test model) in its own process. For each
protocol it times a one-text request on the idle server, then sends `--abandoned` requests of `--texts`
texts each and gives them up (gRPC: cancelled once the server holds them; HTTP: the connection closed after
0.5 s), and times the one-text request again. The ratio is that second time over the idle one. With the
abandoned work dropped, what is left is the server noticing that the clients left and dropping their
texts (measured on 2 cores: gRPC 9 -> 103 ms, HTTP 30 -> 520 ms; 3 s later both are back to idle).
Were it encoded, the one text would wait for every abandoned text: the same run on the code before the
fix gave HTTP 50 -> 6,688 ms (132x). On an idle server gRPC's handlers queue before the cancels arrive,
so the race CI hit (handlers queueing after their client left) shows only under load: see
tests/test_service.py::test_work_queued_after_the_client_left_is_dropped.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from servers import wait_until_ready  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--abandoned", type=int, default=20)
    parser.add_argument("--texts", type=int, default=1000, help="texts per abandoned request (the server takes 1,024)")
    parser.add_argument("--port", type=int, default=51127)
    args = parser.parse_args()
    import grpc
    import httpx

    import photoseek.encoders.jina_protocol as jp

    server = subprocess.Popen([sys.executable, str(ROOT / "image_search.py"), "--mode", "serve-encoder",
                               "--model", "shapes-tiny::v1", "--port", str(args.port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port + 1}"
    channel = grpc.insecure_channel(f"127.0.0.1:{args.port}", options=jp.CHANNEL_OPTIONS)
    single = channel.unary_unary(jp.PROCESS_SINGLE_DATA, request_serializer=jp.DataRequest.SerializeToString,
                                 response_deserializer=jp.DataRequest.FromString)

    def texts_request(texts: list[str]) -> jp.DataRequest:
        request = jp.DataRequest()
        for text in texts:
            request.data.docs.docs.add(text=text)
        return request

    def many(round_: int) -> list[str]:
        return [f"a long forgotten query number {round_} {i} " * 3 for i in range(args.texts)]

    def grpc_one() -> None:
        single(texts_request(["a red circle"]), timeout=300)

    def http_one() -> None:
        httpx.post(url + "/post", json={"data": [{"text": "a red circle"}]}, timeout=300).raise_for_status()

    def grpc_abandon() -> None:
        calls = [single.future(texts_request(many(round_)), timeout=300) for round_ in range(args.abandoned)]
        time.sleep(1.0)  # the server has read them and queued their texts
        for call in calls:
            call.cancel()

    def http_abandon() -> None:
        def post(round_: int) -> None:
            try:
                httpx.post(url + "/post", json={"data": [{"text": t} for t in many(round_)]}, timeout=0.5)
            except httpx.TimeoutException:
                pass  # the client gives up: its connection is closed
        threads = [threading.Thread(target=post, args=(round_,)) for round_ in range(args.abandoned)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def timed(call: Callable[[], None]) -> float:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started

    try:
        wait_until_ready(lambda: httpx.get(url + "/dry_run", timeout=1).raise_for_status(), server, "encoder server", 120,
                         (httpx.HTTPError,))
        print(f"{args.abandoned} abandoned requests of {args.texts} texts, then one text:")
        for name, one, abandon in (("gRPC", grpc_one, grpc_abandon), ("HTTP", http_one, http_abandon)):
            idle = statistics.median(timed(one) for _ in range(5))
            abandon()
            after = timed(one)
            print(f"  {name}: idle {idle * 1000:.1f} ms, after the abandoned requests {after * 1000:.1f} ms, "
                  f"ratio {after / idle:.1f}x")
    finally:
        channel.close()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
