"""Camera RAW files: real DNG files (written with tifffile, laid out as cameras write them, from real
photographs' pixels as an RGGB mosaic, since no camera file can be downloaded here) decoded through LibRaw
(rawpy), indexed and searched; a RAW beside a same-named JPEG indexed once (rclip's rule); served to a
browser as JPEG. Decoding them (previews, development, orientation, bad files): tests/test_image_loading.py."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import TEST_MODEL, write_dng
from http_server import running_server
from PIL import Image

from image_search import ImageSearchEngine
from milvus_store import path_id
from photoseek.indexing.decode import IMAGE_EXTENSIONS
from photoseek.indexing.scan import scan_directory

pytest.importorskip("rawpy")


def test_a_raw_beside_its_jpeg_is_listed_once(tmp_path: Path) -> None:
    for name in ("IMG_1.CR2", "IMG_1.JPG", "IMG_2.nef", "IMG_3.dng", "img_3.heic", "IMG_4.arw", "IMG_4.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "IMG_2.jpg").write_bytes(b"x")  # another folder: not the same shot's pair
    listed = sorted(str(Path(f.path).relative_to(tmp_path)) for f in scan_directory(tmp_path).files)
    expected = ["IMG_1.JPG", "IMG_2.nef", "IMG_4.png", "other/IMG_2.jpg"] + (["img_3.heic"] if ".heic" in IMAGE_EXTENSIONS else ["IMG_3.dng"])
    assert listed == sorted(expected)


@pytest.mark.slow
def test_raw_photos_are_indexed_searched_and_served(tmp_path: Path, photos: dict[str, Path]) -> None:
    from photoseek.servers.http_api import create_app

    library = tmp_path / "library"
    library.mkdir()
    write_dng(library / "chelsea.dng", photos["chelsea"])
    write_dng(library / "coffee.dng", photos["coffee"])
    shutil.copy(photos["coffee"], library / "coffee.jpg")  # the camera's JPEG of the same shot
    shutil.copy(photos["astronaut"], library / "astronaut.jpg")
    with ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(tmp_path / "raw.db"), device="cpu") as engine:
        summary = engine.index_directory(library)
        assert (summary.indexed, summary.failed) == (3, [])
        found = engine.search_by_image(library / "chelsea.dng", top_k=3)
        assert found[0].path == str(library / "chelsea.dng") and found[0].score > 0.999
        assert found[0].metadata is not None and (found[0].metadata.width, found[0].metadata.height) == (320, 212)
        assert engine.image_record(path_id(str(library / "coffee.dng"))) is None
        with running_server(create_app(engine, thumbnail_dir=tmp_path / "thumbs", index_roots=[str(library)])) as url:
            image_id = path_id(str(library / "chelsea.dng"))
            for route in (f"/api/images/{image_id}", f"/api/images/{image_id}/thumbnail"):
                answer = httpx.get(url + route, timeout=30)
                assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg", route
                Image.open(io.BytesIO(answer.content)).verify()
