#!/usr/bin/env bash
# Installs clip-as-service's server and client into .venv-clip-server (beside .venv), for service mode and its tests.
#
# Disk: torch with its CUDA libraries is about 5.5 GB. When .venv already holds the same torch
# (install.sh makes it first), this venv borrows it instead of installing a second copy: a .pth file
# puts .venv's site-packages at the END of sys.path, so everything clip-server pins (open_clip 2.8,
# pydantic 1, protobuf, grpcio...) is installed here and shadows .venv's versions, and only what is
# missing here (torch, torchvision, the nvidia libraries) is found there. pip sees the borrowed torch
# as installed and satisfying the torch==2.14.1 pin, and never uninstalls outside this venv.
# PHOTOSEEK_CLIP_SERVER_OWN_TORCH=1 installs a private copy instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_NO_CACHE_DIR=1
python3 -m venv .venv-clip-server
own_site=$(.venv-clip-server/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
rm -f "$own_site/_borrowed_torch.pth"
if [ "${PHOTOSEEK_CLIP_SERVER_OWN_TORCH:-0}" != 1 ] && [ -x .venv/bin/python ]; then
    main_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    main_torch=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
    same_python=$([ "$(.venv/bin/python -c 'import sys; print(sys.version_info[:2])')" = \
                     "$(.venv-clip-server/bin/python -c 'import sys; print(sys.version_info[:2])')" ] && echo 1 || echo 0)
    if [ "$main_torch" = "2.14.1" ] && [ "$same_python" = 1 ]; then
        echo "$main_site" > "$own_site/_borrowed_torch.pth"
        echo "clip-server venv: borrowing torch $main_torch from $main_site"
    fi
fi
.venv-clip-server/bin/pip install -r service/requirements-clip-server.txt
# Step 2, over the pins: protobuf 3.20's pure-Python backend stalls the first request for 10-55 s
# (4.25 does not), and the [onnx] extra pins onnxruntime-gpu<=1.13.1, which has no Python 3.11 build.
.venv-clip-server/bin/pip install "protobuf==4.25.8" onnxruntime
