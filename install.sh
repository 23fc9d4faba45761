#!/usr/bin/env bash
# Installs everything into .venv at the repository root: the runtime, the test tools, a Milvus
# server for the server-path tests, and (as root on Debian/Ubuntu) Chromium for the browser test.
set -euo pipefail
cd "$(dirname "$0")"
export PIP_NO_CACHE_DIR=1  # the CI disk is small: no second copy of every wheel
python3 -m venv .venv
.venv/bin/pip install -r requirements-dev.txt
# clip-as-service's server in its own venv, for the service-mode tests against a real clip-server
bash service/install-clip-server.sh
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver fonts-wqy-zenhei
    fi
else
    echo "note: Chromium not installed (needs root and apt-get); the browser test will be skipped" >&2
fi
