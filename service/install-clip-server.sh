#!/usr/bin/env bash
# Installs clip-as-service's server and client into .venv-clip-server (beside .venv), for service mode and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-clip-server
.venv-clip-server/bin/pip install -r service/requirements-clip-server.txt
# Step 2, over the pins: protobuf 3.20's pure-Python backend stalls the first request for 10-55 s
# (4.25 does not), and the [onnx] extra pins onnxruntime-gpu<=1.13.1, which has no Python 3.11 build.
.venv-clip-server/bin/pip install "protobuf==4.25.8" onnxruntime
