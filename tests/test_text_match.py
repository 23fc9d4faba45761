"""Words CLIP cannot see: a query naming a word found only in one photo's description, file name or folder
name ranks that photo first (Milvus's BM25 function fused with the CLIP ranking by hybrid_search), Chinese
included; queries whose words match nothing rank exactly as CLIP alone; a Milvus 2.3 server searches by
CLIP alone, never failing; the CLI's --text-match."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import TEST_MODEL, TEST_RUNTIME

from image_search import ImageSearchEngine
from photoseek.errors import TextMatchUnavailableWarning
from photoseek.store.words import STOP_WORDS, words_for_matching

pytestmark = pytest.mark.slow


@pytest.mark.mutation  # fast: no model, no store
def test_words_are_written_for_the_analyzer() -> None:
    assert words_for_matching("外婆家的猫").split() == ["外", "婆", "家", "的", "猫", "外婆", "婆家", "家的", "的猫"]
    assert words_for_matching("IMG_2019/06 Kyoto").split() == ["IMG", "2019", "06", "Kyoto"]
    assert words_for_matching("D:\\Photos\\family_trip").split() == ["D:", "Photos", "family", "trip"]  # a Windows path
    assert {"photo", "a", "of", "jpg"} <= STOP_WORDS


@pytest.fixture()
def library(tmp_path: Path, scenes: Path) -> tuple[Path, dict[str, str]]:
    """The scenes spread over folders; two have descriptions, two live in folders with telling names."""
    root = tmp_path / "lib"
    names = sorted(p.name for p in scenes.glob("*.png"))
    places = {names[3]: "trips/2019-06 Kyoto", names[5]: "family/外婆家", names[11]: "misc", names[17]: "misc"}
    for name in names:
        target = root / places.get(name, "misc") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(scenes / name, target)
    descriptions = {names[11]: "Alice at the beach", names[17]: "一只橘色的猫在沙发上"}
    return root, descriptions


@pytest.mark.mutation
def test_a_word_only_one_photo_has_ranks_it_first(library: tuple[Path, dict[str, str]], store_uri: str, collection_name: str) -> None:
    root, descriptions = library
    engine = ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=store_uri, collection_name=collection_name, device="cpu")
    plain = ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=store_uri, collection_name=collection_name, device="cpu",
                              text_match="off")
    try:
        assert engine.index_directory(root, descriptions).indexed == 24
        if not engine.store.supports_text_match():  # a Milvus 2.3 server: CLIP alone, as before, and said so only when asked
            assert engine.get_stats()["text_match"] is False
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert [r.id for r in engine.search("Alice", top_k=10)] == [r.id for r in plain.search("Alice", top_k=10)]
            insisting = ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=store_uri, collection_name=collection_name,
                                          device="cpu", text_match="on")
            try:
                with pytest.warns(TextMatchUnavailableWarning, match="searching by CLIP alone"):
                    insisting.search("Alice")
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    insisting.search("Alice")  # one notice, not one per search
            finally:
                insisting.close()
            return
        assert engine.get_stats()["text_match"] is True and plain.get_stats()["text_match"] is False  # turned off: said so
        for query, expected in (("Alice", "misc"), ("alice beach", "misc"), ("2019-06 Kyoto", "2019-06 Kyoto"),
                                ("kyoto", "2019-06 Kyoto"), ("外婆家", "外婆家"), ("橘色的猫", "misc")):
            first = engine.search(query, top_k=5)[0]
            assert Path(first.path).parent.name == expected, (query, first.path)
            if expected == "misc":
                assert first.description == descriptions[Path(first.path).name]
            # the score is still the cosine similarity of the CLIP vectors
            cosine = [r for r in plain.search(query, top_k=24) if r.id == first.id][0].score
            assert first.score == pytest.approx(cosine, abs=1e-5)
        for query in ("a red circle", "a small blue cross", "a photo of a green square"):  # no word of theirs is stored
            fused, clip = engine.search(query, top_k=10), plain.search(query, top_k=10)
            assert [r.id for r in fused] == [r.id for r in clip], query
            assert [r.score for r in fused] == pytest.approx([r.score for r in clip], abs=1e-5)
        # off is CLIP alone: the photo only its description names is not first there
        assert Path(plain.search("Alice", top_k=5)[0].path).name != next(n for n, d in descriptions.items() if "Alice" in d)
        batch = engine.search_batch(["Alice", "外婆家"], top_k=3)
        assert [Path(b[0].path).parent.name for b in batch] == ["misc", "外婆家"]
        engine.warm()  # as a server does: words that match nothing are answered from the vectors in memory, the same
        assert [r.id for r in engine.search("a small blue cross", top_k=10)] == [r.id for r in plain.search("a small blue cross", top_k=10)]
        assert Path(engine.search("kyoto", top_k=3)[0].path).parent.name == "2019-06 Kyoto"
        # a folder filter applies to both rankings
        only_trips = engine.search("Alice", top_k=5, search_filter=_under(root / "trips"))
        assert only_trips and all("/trips/" in r.path for r in only_trips)
        # a query with no word to match ("!!!", CLIP alone) keeps to the filter too, and each query of a batch
        # gets its own answer
        kept = engine.search_batch(["!!!", "a small blue cross", "Alice"], top_k=5, search_filter=_under(root / "family"))
        assert [len(found) for found in kept] == [1, 1, 1] and all("/family/" in r.path for found in kept for r in found)
    finally:
        engine.store.drop()
        engine.close()
        plain.close()


def _under(folder: Path):  # type: ignore[no-untyped-def]
    from milvus_store import SearchFilter

    return SearchFilter(path_prefix=str(folder) + os.sep)


def test_the_cli_turns_word_matching_off_and_on(library: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    from test_cli import run_cli

    root, descriptions = library
    (tmp_path / "descriptions.json").write_text(json.dumps(descriptions, ensure_ascii=False), encoding="utf-8")
    database, home = str(tmp_path / "words.db"), tmp_path / "home"
    os.environ.pop("PHOTOSEEK_MILVUS_URI", None)
    run_cli("--mode", "index", "--model", TEST_MODEL, "--milvus-uri", database, "--image-dir", str(root),
            "--descriptions", str(tmp_path / "descriptions.json"), home=home)
    fused = json.loads(run_cli("--mode", "search", "--model", TEST_MODEL, "--milvus-uri", database, "--query", "外婆家",
                               "--json", home=home).stdout)
    assert Path(fused[0]["path"]).parent.name == "外婆家"
    clip = json.loads(run_cli("--mode", "search", "--model", TEST_MODEL, "--milvus-uri", database, "--query", "外婆家",
                              "--text-match", "off", "--json", "--top-k", "24", home=home).stdout)
    with ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=database, device="cpu", text_match="off") as plain:
        assert [int(r["id"]) for r in clip] == [r.id for r in plain.search("外婆家", top_k=24)]
    stats = json.loads(run_cli("--mode", "stats", "--milvus-uri", database, "--json", home=home).stdout)
    assert stats["text_match"] is True
