"""Write a clip-server flow file for an ONNX model folder, from service/clip-server-onnx.yml.

    python tools/clip_server_flow.py ONNX_DIR OUT.yml [--grpc-port 51000] [--http-port 51001] [--name ViT-B-32::openai]

ONNX_DIR is what tools/export_onnx.py writes; --name is the architecture, which picks clip-server's
preprocessing and tokenizer. A port of 0 leaves that protocol out. Then:
    NO_VERSION_CHECK=1 JINA_OPTOUT_TELEMETRY=1 .venv-clip-server/bin/python -m clip_server OUT.yml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "service" / "clip-server-onnx.yml"


def write_onnx_flow(target: Path, model_path: Path, grpc_port: int = 51000, http_port: int = 51001,
                    name: str = "ViT-B-32::openai") -> Path:
    flow = yaml.safe_load(TEMPLATE.read_text())
    ports = [(port, protocol) for port, protocol in ((grpc_port, "grpc"), (http_port, "http")) if port]
    if not ports:
        raise ValueError("a flow needs at least one of --grpc-port and --http-port")
    flow["with"]["port"] = [port for port, _ in ports]
    flow["with"]["protocol"] = [protocol for _, protocol in ports]
    executor = flow["executors"][0]["uses"]["with"]
    executor["name"], executor["model_path"] = name, str(Path(model_path).resolve())
    target.write_text(yaml.safe_dump(flow, sort_keys=False))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_path", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--grpc-port", type=int, default=51000)
    parser.add_argument("--http-port", type=int, default=51001)
    parser.add_argument("--name", default="ViT-B-32::openai")
    args = parser.parse_args()
    write_onnx_flow(args.out, args.model_path, args.grpc_port, args.http_port, args.name)
    print(args.out)


if __name__ == "__main__":
    main()
