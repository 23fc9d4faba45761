"""Every option that exists on more than one path gives the same answer on each: the engine in process (the CLI
with the store to itself), and the same engine through a running server (the CLI's way when a server holds the
store: RemoteEngine over the HTTP API, which the page uses too). A path that drops or bends an option fails here.

One library of real photographs with the headers cameras write (tests/test_metadata.py), copies of some of them
(for duplicates) and scenes in a sibling folder whose name starts the same."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_MODEL
from http_server import running_server
from PIL import Image, ImageOps
from test_metadata import KYOTO, build_library

from image_search import ImageSearchEngine, Near, QueryTerm, SearchFilter
from photoseek.photo_metadata import parse_when
from photoseek.servers.http_api import create_app
from photoseek.servers.remote_engine import RemoteEngine

pytestmark = pytest.mark.slow


class Library:
    def __init__(self, root: Path, engine: ImageSearchEngine, remote: RemoteEngine):
        self.root, self.engine, self.remote = root, engine, remote


@pytest.fixture(scope="module")
def library(photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    from make_scenes import write_scenes

    base = tmp_path_factory.mktemp("paths")
    root = base / "library"
    build_library(root / "trips", photos)
    for name in ("kyoto_canon.jpg", "osaka_iphone.jpg"):  # a copy and a mirrored copy: two duplicate groups
        image = Image.open(root / "trips" / name)
        image.resize((image.width // 2, image.height // 2)).save(root / "trips" / f"small_{name}", quality=90)
        ImageOps.mirror(image).save(root / "trips" / f"mirror_{name}", quality=90)
    write_scenes(root / "trips2", count=8, seed=5)  # a sibling whose name starts like "trips"
    os.utime(root / "trips2" / "scene_00001.png", (1.5e9, 1.5e9))
    engine = ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(base / "paths.db"), device="cpu")
    engine.index_directory(root, descriptions={"scene_00002.png": "Alice at the beach"})
    engine.warm()
    with running_server(create_app(engine, thumbnail_dir=base / "thumbs", index_roots=[str(base)])) as url:
        remote = RemoteEngine(url)
        yield Library(root, engine, remote)
        remote.close()
    engine.close()


def _trips(library: Library) -> str:
    return str(library.root / "trips") + os.sep  # a folder, as the CLI's --in and the API's folder give it


CASES: dict[str, Callable[[Any, Library], Any]] = {
    "words": lambda e, lib: e.search("a photo of a cat", top_k=8),
    "words that name a photo": lambda e, lib: e.search("Alice", top_k=3),
    "a batch": lambda e, lib: e.search_batch(["a red circle", "coffee", "Alice"], top_k=4),
    "folder": lambda e, lib: e.search("shape", top_k=30, search_filter=SearchFilter(path_prefix=_trips(lib))),
    "file types": lambda e, lib: e.search("shape", top_k=30, search_filter=SearchFilter(extensions=("png",))),
    "modified after": lambda e, lib: e.search("shape", top_k=30, search_filter=SearchFilter(modified_after=1.6e9)),
    "modified before": lambda e, lib: e.search("shape", top_k=30, search_filter=SearchFilter(modified_before=1.6e9)),
    "taken between": lambda e, lib: e.search("x", top_k=30, search_filter=SearchFilter(
        taken_after=parse_when("2019-06-01"), taken_before=parse_when("2019-06-30", end_of_day=True))),
    "camera": lambda e, lib: e.search("x", top_k=30, search_filter=SearchFilter(camera="iphone")),
    "near": lambda e, lib: e.search("x", top_k=30, search_filter=SearchFilter(near=Near(KYOTO[0], KYOTO[1], 100))),
    "min width": lambda e, lib: e.search("x", top_k=30, search_filter=SearchFilter(min_width=350)),
    "filters together": lambda e, lib: e.search("x", top_k=30, search_filter=SearchFilter(
        path_prefix=_trips(lib), camera="canon", min_width=300, extensions=("jpg",))),
    "composed: add and subtract words": lambda e, lib: e.search_composed(
        [QueryTerm(text="a red circle"), QueryTerm(text="a square", weight=2), QueryTerm(text="blue", weight=-1)], top_k=8),
    "composed: subtract an indexed photo": lambda e, lib: e.search_composed(
        [QueryTerm(text="a photo"), QueryTerm(image=str(lib.root / "trips" / "kyoto_canon.jpg"), weight=-0.5)], top_k=8,
        search_filter=SearchFilter(min_width=200)),
    "by image, filtered": lambda e, lib: e.search_by_image(str(lib.root / "trips" / "kyoto_canon.jpg"), top_k=10,
                                                           search_filter=SearchFilter(min_width=300)),
    "similar, filtered": lambda e, lib: e.similar(str(lib.root / "trips" / "osaka_iphone.jpg"), top_k=10,
                                                  search_filter=SearchFilter(path_prefix=_trips(lib))),
    "duplicates": lambda e, lib: e.find_duplicates().groups,
    "duplicates, filtered": lambda e, lib: e.find_duplicates(search_filter=SearchFilter(min_width=300)).groups,
}


def _seen(answer: Any) -> Any:
    """What a user sees of an answer: each result's path and score, in order (lists of lists kept as such)."""
    if isinstance(answer, list) and answer and isinstance(answer[0], list):
        return [_seen(part) for part in answer]
    return [(Path(r.path).relative_to(r.path.rsplit("/library/", 1)[0]).as_posix(), round(r.score, 4)) for r in answer]


@pytest.mark.parametrize("case", list(CASES))
def test_an_option_gives_the_same_answer_in_process_and_through_a_running_server(library: Library, case: str) -> None:
    in_process = _seen(CASES[case](library.engine, library))
    through_server = _seen(CASES[case](library.remote, library))
    assert in_process, f"{case}: the case selects nothing, so it would show nothing"
    assert through_server == in_process, case


def test_the_cases_select_what_they_name(library: Library) -> None:
    """The comparison above is only as good as its cases: each filter keeps some photos and leaves others out."""
    everything = {r.path for r in library.engine.search("x", top_k=100)}
    for case in ("folder", "file types", "modified after", "modified before", "taken between", "camera", "near", "min width",
                 "filters together"):
        kept = {r.path for r in CASES[case](library.engine, library)}
        assert kept and kept < everything, case


def test_an_index_run_through_a_running_server_leaves_out_what_exclude_names(library: Library, tmp_path: Path) -> None:
    album = library.root / "album"
    for sub in ("keep", "exports"):
        (album / sub).mkdir(parents=True)
        shutil.copy(library.root / "trips2" / "scene_00003.png", album / sub / "scene_00003.png")
    summary = library.remote.index_directory(str(album), exclude=["exports"])
    assert summary.indexed == 1
    found = {r.path for r in library.engine.search("x", top_k=100, search_filter=SearchFilter(path_prefix=str(album)))}
    assert found == {str(album / "keep" / "scene_00003.png")}
