"""The package as users install it: a wheel built from the repository, installed into a fresh venv,
used from a folder outside the checkout (the web page and the shipped test model are package data)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, TEST_MODEL, import_blocker
from http_server import free_port


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repository with the wheel installed. Its dependencies (torch and the
    rest, gigabytes) are borrowed from the test environment through a path entry, which adds those
    packages to sys.path but none of their .pth hooks, so the checkout's editable install stays out:
    photoseek's own code comes from the wheel only."""
    work = tmp_path_factory.mktemp("wheel")
    # build from a copy of what git would commit: a build/ left in the checkout could ship stale files
    source = work / "source"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True)
    if listed.returncode == 0:
        names = listed.stdout.decode().split("\0")
    else:  # not a git checkout (a scratch copy): everything but environments and build output
        skip = {".venv", ".venv-clip-server", "build", ".git", "mutants", "__pycache__", "test-output"}
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(work / "dist")],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next((work / "dist").glob("photoseek-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"photoseek/__main__.py", "photoseek/servers/web/index.html", "photoseek/servers/web/app.js",
            "photoseek/models/shapes-tiny-v1/open_clip_model.safetensors"} <= set(names), names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "tools/"))]  # only the product ships
    # the repository's three faces are not installed under their generic names: everything is under photoseek/
    assert not [n for n in names if "/" not in n and n.endswith(".py")], names

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    fresh_site = next((venv / "lib").glob("python*/site-packages"))
    (fresh_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    done = subprocess.run([str(venv / "bin/pip"), "install", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return venv


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PHOTOSEEK_HOME": str(home), "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_the_installed_command_indexes_searches_and_serves_its_page(installed: Path, tmp_path: Path) -> None:
    from make_scenes import write_scenes

    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing may come from the working directory
    elsewhere.mkdir()
    scenes = tmp_path / "scenes"
    captions = write_scenes(scenes, count=20, seed=11)
    env = _clean_env(tmp_path / "home")
    command = str(installed / "bin/photoseek")

    where = subprocess.run([str(installed / "bin/python"), "-c", "import photoseek; print(photoseek.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)
    assert where.returncode == 0 and str(ROOT) not in where.stdout and str(installed) in where.stdout, where
    module = subprocess.run([str(installed / "bin/python"), "-m", "photoseek", "--version"], capture_output=True, text=True,
                            cwd=elsewhere, env=env, timeout=120)
    assert module.returncode == 0 and module.stdout.strip().startswith("photoseek "), module

    help_text = subprocess.run([command, "--help"], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60)
    assert help_text.returncode == 0 and "--mode" in help_text.stdout

    index = subprocess.run([command, "--mode", "index", "--model", TEST_MODEL, "--image-dir", str(scenes), "-q", "--json"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600)
    assert index.returncode == 0, index.stderr[-2000:]
    assert json.loads(index.stdout)["indexed"] == 20

    name, caption = next(iter(captions.items()))
    search = subprocess.run([command, "--mode", "search", "--query", caption["en"], "--top-k", "20", "--json"],
                            capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600)
    assert search.returncode == 0, search.stderr[-2000:]
    results = json.loads(search.stdout)
    assert len(results) == 20 and name in {Path(r["path"]).name for r in results[:5]}

    port = free_port()
    server = subprocess.Popen([command, "--mode", "serve", "--port", str(port)], cwd=elsewhere, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline, page = time.time() + 120, None
        while time.time() < deadline and server.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        if page is None:
            server.kill()
            pytest.fail(f"the installed server did not answer: {server.communicate()[1][-2000:]!r}")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx.get(f"http://127.0.0.1:{port}/static/app.js", timeout=5).status_code == 200
        found = httpx.get(f"http://127.0.0.1:{port}/api/search", params={"q": caption["en"], "top_k": 5}, timeout=30).json()
        assert name in {Path(r["path"]).name for r in found["results"]}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=60)


@pytest.mark.slow
def test_a_missing_extra_is_named(installed: Path, tmp_path: Path) -> None:
    """Without the [serve] extra, --mode serve says which extra to install (fastapi hidden from the import system)."""
    env = {**_clean_env(tmp_path / "home"), "PYTHONPATH": import_blocker(tmp_path / "block", "fastapi", "uvicorn")}
    done = subprocess.run([str(installed / "bin/photoseek"), "--mode", "serve", "--model", TEST_MODEL],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 1 and "photoseek[serve]" in done.stderr, done.stderr[-2000:]
