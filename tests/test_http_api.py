"""The HTTP API over real HTTP (uvicorn on loopback), a real Milvus Lite and the test model."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import TEST_MODEL, captions_of
from http_server import running_server
from PIL import Image

from image_search import ImageSearchEngine
from photoseek.servers.http_api import create_app

pytestmark = pytest.mark.slow  # real Milvus, the model, or servers: not in the fast tier


@pytest.fixture()
def library(tmp_path: Path, scenes: Path) -> Path:
    (scenes / "sub").mkdir()
    for name in ["scene_00010.png", "scene_00011.png"]:
        shutil.move(scenes / name, scenes / "sub" / name)
    (scenes / "sub2").mkdir()  # a sibling whose name starts with "sub": a folder filter must not take it in
    shutil.move(scenes / "scene_00014.png", scenes / "sub2" / "scene_00014.png")
    Image.open(scenes / "scene_00012.png").convert("RGB").save(scenes / "scene_00012.jpg", quality=95)
    (scenes / "scene_00012.png").unlink()
    old = scenes / "scene_00013.png"
    os.utime(old, (1_500_000_000, 1_500_000_000))  # 2017
    return scenes


@pytest.fixture()
def engine(tmp_path: Path, library: Path):  # type: ignore[no-untyped-def]
    # CLIP alone: these tests hold the API to the exact CLIP ranking (and the warm in-memory path); the captions are
    # descriptions, which words would also match (tests/test_text_match.py)
    engine = ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(tmp_path / "api.db"), device="cpu", text_match="off")
    engine.index_directory(library, descriptions={k: v["en"] for k, v in captions_of(library).items()})
    yield engine
    engine.close()


@pytest.fixture()
def api(engine: ImageSearchEngine, tmp_path: Path):  # type: ignore[no-untyped-def]
    engine.warm()  # as `--mode serve` does: unfiltered searches answered from memory, filtered ones by Milvus
    app = create_app(engine, thumbnail_dir=tmp_path / "thumbs", max_upload_bytes=2 * 1024 * 1024,
                     index_roots=[str(tmp_path)])
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_text_search_ranks_the_described_scene_first(api: httpx.Client, library: Path, engine: ImageSearchEngine) -> None:
    captions = captions_of(library)
    name = "scene_00003.png"
    response = api.get("/api/search", params={"q": captions[name]["en"], "top_k": 5})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 5 and [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert name in [Path(r["path"]).name for r in results]
    # best first: the order of an exact search over every stored vector, computed here
    query = engine.encoder.encode_texts([captions[name]["en"]])[0]
    rows = engine.store.get([int(r["id"]) for r in api.get("/api/search", params={"q": "x", "top_k": 100}).json()["results"]],
                            with_vectors=True)
    exact = sorted(rows, key=lambda row: -float(np.asarray(row["vector"], dtype=np.float32) @ query))[:5]
    assert [r["path"] for r in results] == [row["path"] for row in exact]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0 + 1e-5
    first = results[0]
    assert first["thumbnail_url"] == f"/api/images/{first['id']}/thumbnail" and first["description"]
    chinese = api.get("/api/search", params={"q": captions[name]["zh"], "top_k": 5}).json()["results"]
    assert name in [Path(r["path"]).name for r in chinese]


def test_filters_folder_type_and_dates(api: httpx.Client, library: Path) -> None:
    sub = api.get("/api/search", params={"q": "shape", "top_k": 50, "folder": str(library / "sub")}).json()["results"]
    assert sorted(Path(r["path"]).name for r in sub) == ["scene_00010.png", "scene_00011.png"]
    slash = api.get("/api/search", params={"q": "shape", "top_k": 50, "folder": str(library / "sub") + "/"}).json()["results"]
    assert sorted(Path(r["path"]).name for r in slash) == ["scene_00010.png", "scene_00011.png"]
    sub2 = api.get("/api/search", params={"q": "shape", "top_k": 50, "folder": str(library / "sub2")}).json()["results"]
    assert [Path(r["path"]).name for r in sub2] == ["scene_00014.png"]
    jpg = api.get("/api/search", params={"q": "shape", "top_k": 50, "ext": "jpg"}).json()["results"]
    assert [Path(r["path"]).name for r in jpg] == ["scene_00012.jpg"]
    old = api.get("/api/search", params={"q": "shape", "top_k": 50, "modified_before": "2018-01-01"}).json()["results"]
    assert [Path(r["path"]).name for r in old] == ["scene_00013.png"]
    new = api.get("/api/search", params={"q": "shape", "top_k": 50, "modified_after": "2018-01-01"}).json()["results"]
    assert len(new) == 23
    bad = api.get("/api/search", params={"q": "shape", "modified_after": "last tuesday"})
    assert bad.status_code == 400 and "modified_after" in bad.json()["error"]
    relative = api.get("/api/search", params={"q": "shape", "folder": "sub"})
    assert relative.status_code == 400 and "absolute" in relative.json()["error"]


def test_batch_search_keeps_query_order(api: httpx.Client) -> None:
    body = api.post("/api/search/batch", json={"queries": ["a red circle", "一个蓝色星形"], "top_k": 3}).json()
    assert [x["query"] for x in body["results"]] == ["a red circle", "一个蓝色星形"]
    assert all(len(x["results"]) == 3 for x in body["results"])
    assert api.post("/api/search/batch", json={"queries": [], "top_k": 3}).status_code == 422


def test_search_by_uploaded_image_and_similar(api: httpx.Client, library: Path) -> None:
    target = library / "scene_00005.png"
    with target.open("rb") as handle:
        response = api.post("/api/search/image", files={"file": ("query.png", handle, "image/png")}, data={"top_k": "3"})
    assert response.status_code == 200
    first = response.json()["results"][0]
    assert first["path"] == str(target) and first["score"] > 0.99
    similar = api.get(f"/api/similar/{first['id']}", params={"top_k": 4}).json()["results"]
    assert len(similar) == 4 and all(r["id"] != first["id"] for r in similar)


def test_images_and_thumbnails_are_served_for_indexed_files(api: httpx.Client, library: Path) -> None:
    result = api.get("/api/search", params={"q": "shape", "top_k": 1}).json()["results"][0]
    original = api.get(result["image_url"])
    assert original.status_code == 200 and original.content == Path(result["path"]).read_bytes()
    assert original.headers["content-type"].startswith("image/")
    thumb = api.get(result["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256


@pytest.mark.parametrize("url", [
    "/api/images/../../../../etc/passwd",
    "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/images/%2Fetc%2Fpasswd",
    "/api/images//etc/passwd",
    "/api/images/1/thumbnail/../../../etc/passwd",
    "/api/images/123456789",
    "/api/images/-1/thumbnail",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
])
def test_no_other_file_can_be_read(api: httpx.Client, url: str) -> None:
    response = api.get(url)
    assert response.status_code in (400, 404, 405, 422)
    assert b"root:" not in response.content


def test_a_file_swapped_for_a_symlink_is_not_served(api: httpx.Client, library: Path, tmp_path: Path) -> None:
    result = api.get("/api/search", params={"q": "shape", "top_k": 1}).json()["results"][0]
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0 top secret")
    path = Path(result["path"])
    path.unlink()
    path.symlink_to(secret)
    for url in (result["image_url"], result["thumbnail_url"]):
        response = api.get(url)
        assert response.status_code in (404, 409) and b"secret" not in response.content


@pytest.mark.parametrize("change", ["content and mtime, same size", "size only, same mtime"])
def test_a_file_changed_since_indexing_is_not_served(api: httpx.Client, change: str) -> None:
    """Either change alone is enough to refuse: the size check and the mtime check each have a case."""
    result = api.get("/api/search", params={"q": "shape", "top_k": 1}).json()["results"][0]
    path = Path(result["path"])
    before = path.stat()
    if change.startswith("content"):
        data = path.read_bytes()
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        os.utime(path, (before.st_atime, before.st_mtime + 5))
        assert path.stat().st_size == before.st_size
    else:
        with path.open("ab") as handle:
            handle.write(b"\0" * 10)
        os.utime(path, (before.st_atime, before.st_mtime))
        assert path.stat().st_mtime == before.st_mtime
    for url in (result["image_url"], result["thumbnail_url"]):
        assert api.get(url).status_code == 409, (change, url)


def test_index_job_reports_progress_and_summary(api: httpx.Client, tmp_path: Path) -> None:
    from make_scenes import write_scenes

    folder = tmp_path / "more"
    write_scenes(folder, count=12, seed=99)
    (folder / "broken.jpg").write_text("not an image")
    (folder / "out").symlink_to("/usr/share", target_is_directory=True)  # not read (outside the roots): a failure
    job = api.post("/api/index", json={"folder": str(folder)})
    assert job.status_code == 202
    job_id = job.json()["id"]
    deadline = time.time() + 60
    while (state := api.get(f"/api/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.2)
    assert state["state"] == "done" and state["done"] == state["total"] == 13
    assert state["summary"]["indexed"] == 12
    assert sorted(f["reason"] for f in state["summary"]["failed"]) == ["not a recognised image format",
                                                                       "outside the folders this index may read (reached through a symbolic link)"]
    assert state["failed"] == len(state["summary"]["failed"]) == 2  # the scan's failures too (the job said 1)
    assert api.get("/api/stats").json()["total_images"] == 36
    newly = api.get("/api/search", params={"q": "shape", "top_k": 36}).json()["results"]
    assert sum(Path(r["path"]).parent == folder for r in newly) == 12  # the warm in-memory copy follows the job
    assert api.get("/api/jobs/999").status_code == 404


def test_index_refuses_bad_and_disallowed_folders(api: httpx.Client, tmp_path: Path) -> None:
    missing = api.post("/api/index", json={"folder": str(tmp_path / "nope")})
    assert missing.status_code == 400 and "does not exist" in missing.json()["error"]
    outside = api.post("/api/index", json={"folder": "/usr/share"})
    assert outside.status_code == 403
    # a symlink inside the allowed root that points outside it: its real path decides
    (tmp_path / "escape").symlink_to("/usr/share")
    through_link = api.post("/api/index", json={"folder": str(tmp_path / "escape")})
    assert through_link.status_code == 403


def test_bad_parameters_get_clear_4xx(api: httpx.Client) -> None:
    empty = api.get("/api/search", params={"q": "   "})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    assert api.get("/api/search", params={"q": "x", "top_k": 0}).status_code == 400
    assert api.get("/api/search", params={"q": "x", "top_k": "many"}).status_code == 422
    assert api.get("/api/search").status_code == 422
    assert api.get("/api/search", params={"q": "x", "ext": "jpg\"]"}).status_code == 400
    junk = api.post("/api/search/image", files={"file": ("x.jpg", b"not an image", "image/jpeg")})
    assert junk.status_code == 400 and "not a recognised image format" in junk.json()["error"]
    big = api.post("/api/search/image", files={"file": ("big.jpg", b"\xff" * (3 * 1024 * 1024), "image/jpeg")})
    assert big.status_code == 413


def test_stats_health_docs_and_page(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    stats = api.get("/api/stats").json()
    assert stats["total_images"] == 24 and stats["model"] == TEST_MODEL
    assert api.get("/openapi.json").json()["info"]["title"] == "photoseek"
    page = api.get("/")
    assert page.status_code == 200 and "<input id=\"query\"" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no external resources
    assert api.get("/static/app.js").status_code == 200


def test_token_guards_every_api_route(engine: ImageSearchEngine, tmp_path: Path) -> None:
    app = create_app(engine, token="s3cret", thumbnail_dir=tmp_path / "thumbs")
    with running_server(app) as url, httpx.Client(base_url=url) as client:
        for route in ["/api/search?q=x", "/api/stats", "/healthz", "/api/jobs", "/openapi.json", "/api/images/1"]:
            assert client.get(route).status_code == 401, route
        assert client.get("/api/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/api/search", params={"q": "x", "token": "s3cret"}).status_code == 200
        assert client.get("/").status_code == 200  # the page shell holds no data; it asks for the token


def test_a_cached_thumbnail_is_answered_without_reading_the_original_again(api: httpx.Client, library: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A results page asks for dozens of thumbnails: the original is read and hashed once, to make one."""
    import photoseek.servers.routes.context as routes

    reads: list[str] = []
    original = routes.read_indexed_file

    def counted(record: dict[str, object], roots: object = ()) -> bytes:
        reads.append(str(record["path"]))
        return original(record, roots)  # type: ignore[arg-type]

    monkeypatch.setattr(routes, "read_indexed_file", counted)
    result = api.get("/api/search", params={"q": "shape", "top_k": 1}).json()["results"][0]
    first, second = api.get(result["thumbnail_url"]), api.get(result["thumbnail_url"])
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert len(reads) == 1
    with Path(result["path"]).open("ab") as handle:  # changed since: no longer answered from the cache
        handle.write(b"\0")
    assert api.get(result["thumbnail_url"]).status_code == 409
