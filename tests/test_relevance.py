"""The right photo first, measured: a few described photos leave visual queries as CLIP ranks them; a query
that names a folder fills the page with it, ordered by the rest of the query; the first results are the same
list whatever top-k; a name finds its photo; duplicates are only real copies (near misses are refused pixel by
pixel). bench/relevance.py measures the same at full size."""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import pytest
from conftest import TEST_MODEL, TEST_RUNTIME, captions_of
from PIL import Image, ImageOps

from image_search import ImageSearchEngine, SearchFilter
from photoseek.indexing.same_picture import compare
from photoseek.results import format_results

pytestmark = pytest.mark.slow


def engines(database: str, name: str = "relevance") -> tuple[ImageSearchEngine, ImageSearchEngine]:
    common = {"model_name": TEST_MODEL, "runtime": TEST_RUNTIME, "milvus_uri": database, "collection_name": name, "device": "cpu"}
    return ImageSearchEngine(**common), ImageSearchEngine(**common, text_match="off")


def recall(engine: ImageSearchEngine, queries: list[str], targets: list[str]) -> tuple[float, float]:
    found = []
    for start in range(0, len(queries), 100):
        found += engine.search_batch(queries[start : start + 100], top_k=5)
    ranks = [next((r.rank for r in results if r.path == target), 99) for results, target in zip(found, targets, strict=True)]
    return sum(r == 1 for r in ranks) / len(ranks), sum(r <= 5 for r in ranks) / len(ranks)


def test_a_few_described_photos_leave_visual_queries_alone(held_out_scenes: Path, tmp_path: Path) -> None:
    """The issue's case: 5 of 500 unseen scenes described by their own captions, and a description that shares one
    ordinary word with many captions ("red") on a photo that does not show it; every scene's caption as a query.
    Before, the described photos came first for every query sharing a word with them (R@1 0.43 -> 0.06)."""
    captions = captions_of(held_out_scenes)
    names = sorted(captions)
    library = tmp_path / "library"
    for n, name in enumerate(names):
        (library / ("Summer 2019", "Kyoto trip", "misc")[n % 3]).mkdir(parents=True, exist_ok=True)
        shutil.copy(held_out_scenes / name, library / ("Summer 2019", "Kyoto trip", "misc")[n % 3] / name)
    paths = [str(library / ("Summer 2019", "Kyoto trip", "misc")[n % 3] / name) for n, name in enumerate(names)]
    described = {paths[n]: captions[names[n]]["en"] for n in random.Random(4).sample(range(len(names)), 5)}
    not_red = next(p for p, name in zip(paths, names, strict=True) if "red" not in captions[name]["en"] and p not in described)
    described[not_red] = "Dinner at the Red Lion pub"
    fused, clip = engines(str(tmp_path / "visual.db"))
    with fused, clip:
        fused.index_directory(library, described)
        queries = [captions[name]["en"] for name in names]
        with_words, alone = recall(fused, queries, paths), recall(clip, queries, paths)
        print(f"R@1 / R@5: words {with_words}, CLIP alone {alone}")
        assert with_words[0] >= alone[0] - 0.01 and with_words[1] >= alone[1] - 0.01
        # the pub photo shares "red" with a sixth of the queries and is named by none of them
        red = [q for q in queries if "red" in q.split()]
        assert not any(results[0].path == not_red for results in fused.search_batch(red, top_k=1))
        assert fused.search("Red Lion", top_k=1)[0].path == not_red  # while its own words still find it


def test_a_folder_name_fills_the_page_in_the_order_of_the_rest_of_the_query(held_out_scenes: Path, tmp_path: Path) -> None:
    captions = captions_of(held_out_scenes)
    names = sorted(captions)[:90]
    library = tmp_path / "library"
    kyoto = library / "trips" / "2019-06 Kyoto"
    for n, name in enumerate(names):
        folder = kyoto if n < 30 else library / ("Beach", "Camera roll")[n % 2]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(held_out_scenes / name, folder / name)
    fused, clip = engines(str(tmp_path / "folders.db"))
    with fused, clip:
        fused.index_directory(library)
        for query in ("Kyoto", "2019-06 Kyoto", "kyoto"):
            found = fused.search(query, top_k=10)
            assert [Path(r.path).parent for r in found] == [kyoto] * 10, query
            assert all(r.matched_words and r.matched_in == ("folder",) for r in found)
        inside = SearchFilter(path_prefix=str(kyoto) + "/")
        for name in names[:30:6]:
            caption = captions[name]["en"]
            found = fused.search(f"Kyoto {caption}", top_k=12)
            # the folder first, in the order CLIP gives the caption among the folder's photos, scores as it scores them
            expected = clip.search(caption, top_k=12, search_filter=inside)
            assert [r.id for r in found] == [r.id for r in expected], caption
            assert [r.score for r in found] == pytest.approx([r.score for r in expected], abs=1e-5)
            assert [r.matched_words for r in found] == [("Kyoto",)] * 12


def test_a_name_finds_its_photo_and_a_name_with_pictured_words_its_photos_in_picture_order(scenes: Path, tmp_path: Path) -> None:
    captions = captions_of(scenes)
    names = sorted(captions)
    described = {names[2]: "Zoe", names[3]: "外婆家的猫", names[4]: "Bob's birthday", names[5]: "Alice",
                 names[6]: "Alice on holiday with friends", names[7]: "Alice"}
    fused, clip = engines(str(tmp_path / "names.db"))
    with fused, clip:
        fused.index_directory(scenes, described)
        for query, name in (("Zoe", names[2]), ("外婆家", names[3]), ("Bob", names[4]), ("birthday", names[4])):
            first = fused.search(query, top_k=3)[0]
            assert Path(first.path).name == name and first.matched_in == ("description",), query
        for target in (names[5], names[7]):  # described "Alice" alone: both first (the query names them in full), the
            query = f"Alice {captions[target]['en']}"  # one that looks like the rest of the query before the other
            found = fused.search(query, top_k=3)
            assert [Path(r.path).name for r in found[:2]] == [target, ({names[5], names[7]} - {target}).pop()], query
            assert found[0].score == pytest.approx(clip.search(captions[target]["en"], top_k=24)[[Path(r.path).name for r in
                                                   clip.search(captions[target]["en"], top_k=24)].index(target)].score, abs=1e-5)
        # "Alice on holiday with friends" holds only part of the query: named when the picture shows the rest
        query = f"Alice {captions[names[6]]['en']}"
        assert Path(fused.search(query, top_k=1)[0].path).name == names[6]
        shown = format_results(fused.search("Zoe", top_k=2))
        assert "words: Zoe (in its description)" in shown and "photos your words name come first" in shown


def test_a_users_folder_layout_and_japanese_words(scenes: Path, tmp_path: Path) -> None:
    """Photos under ~/Pictures/<album> and ~/Downloads: "pictures of ..." is a visual query, not the name of a
    folder (every photo under Pictures would come first); kana inside a longer run of Japanese is found as
    Chinese characters are (a description "うちのねこ" for "ねこ", a file "さくらの木.png" for "さくら")."""
    names = sorted(captions_of(scenes))
    home = tmp_path / "home"
    for number, name in enumerate(names):
        folder = home / "Pictures" / ("Summer 2019" if number % 2 else "Birthday") if number < 16 else home / "Downloads"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(scenes / name, folder / ("さくらの木.png" if number == 20 else name))
    fused, clip = engines(str(tmp_path / "layout.db"))
    with fused, clip:
        fused.index_directory(home, {names[9]: "うちのねこ"})
        for query in ("pictures of a red circle", "pictures of a blue square", "a picture of a green triangle"):
            assert [r.path for r in fused.search(query, top_k=10)] == [r.path for r in clip.search(query, top_k=10)], query
        cat = fused.search("ねこ", top_k=3)[0]
        assert Path(cat.path).name == names[9] and cat.matched_in == ("description",)
        tree = fused.search("さくら", top_k=3)[0]
        assert Path(tree.path).name == "さくらの木.png" and tree.matched_in == ("file name",)


def test_the_first_results_are_one_list_whatever_top_k_and_write_order(scenes: Path, tmp_path: Path, store_uri: str) -> None:
    """Copies of a photo have (nearly) equal vectors: ties go by id, not by the order rows were written, so top-k 1, 3 and
    10 begin alike and a library indexed in another order ranks the same (up to scores within 1e-5 of each other:
    photos encoded in other batches differ in the last bits)."""
    captions = captions_of(scenes)
    names = sorted(captions)
    for copy in range(3):  # three exact copies of one scene, tied in every ranking
        shutil.copy(scenes / names[0], scenes / f"copy_{copy}.png")
    tied = {str(scenes / names[0]), *(str(scenes / f"copy_{copy}.png") for copy in range(3))}
    described = {names[1]: "Alice", names[2]: "Alice at the beach", names[3]: captions[names[9]]["en"]}
    queries = [captions[n]["en"] for n in names[:8]] + ["Alice", "Alice " + captions[names[1]]["en"], "scene"]
    uri = store_uri  # Milvus Lite, and a Milvus server (its worker: see tests/conftest.py)
    rankings = []
    for build, order in enumerate((sorted(scenes.glob("*.png")), sorted(scenes.glob("*.png"), reverse=True))):
        fused, _ = engines(uri, f"order_{build}_{abs(hash(str(tmp_path))) % 10**8}")
        with fused:
            fused.index_images(order, {str(scenes / k): v for k, v in described.items()})
            lists = {k: fused.search_batch(queries, top_k=k) for k in (1, 3, 10)}
            for q in range(len(queries)):
                assert [r.id for r in lists[1][q]] == [r.id for r in lists[10][q][:1]], queries[q]
                assert [r.id for r in lists[3][q]] == [r.id for r in lists[10][q][:3]], queries[q]
            copies = [r for r in lists[10][0] if r.path in tied]
            assert len(copies) == 4 and [r.id for r in copies] == sorted(r.id for r in copies)  # the tie, by id
            rankings.append(lists[10])
            fused.store.drop()
    for first, second in zip(*rankings, strict=True):
        for a, b in zip(first, second, strict=True):
            assert a.id == b.id or abs(a.score - b.score) < 1e-5


# ------------------------------------------------------------------------------ duplicates: copies, not look-alikes


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _scene(shape: str, colour: tuple[int, int, int], centre: tuple[int, int], grey: int = 128, size: int = 256) -> Image.Image:
    """A flat scene as tools/make_scenes.py draws them: one shape on grey with the same fine noise every time."""
    import math

    import numpy as np
    from PIL import ImageDraw

    noise = np.random.default_rng(0).normal(0, 4, (size, size, 1))
    image = Image.fromarray(np.clip(grey + noise, 0, 255).astype(np.uint8).repeat(3, axis=2))
    draw = ImageDraw.Draw(image)
    x, y, r = centre[0], centre[1], 30
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    else:  # a hexagon of the same size
        draw.polygon([(x + r * math.cos(math.pi / 3 * k), y + r * math.sin(math.pi / 3 * k)) for k in range(6)], fill=colour)
    return image


def _page(lines: list[str]) -> Image.Image:
    from PIL import ImageDraw, ImageFont

    page = Image.new("RGB", (600, 780), (250, 250, 248))
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(18)
    for n, line in enumerate(lines):
        draw.text((40, 40 + n * 30), line, fill=(30, 30, 30), font=font)
    return page


@pytest.mark.mutation
def test_copies_are_told_from_near_misses_pixel_by_pixel(photos: dict[str, Path]) -> None:
    green = (30, 170, 50)
    scene = _scene("circle", green, (90, 120))
    lines = [f"line {n}: invoice total amount due for order {n * 37}" for n in range(20)]
    page = _page(lines)
    photo = Image.open(photos["astronaut"]).convert("RGB")
    for original in (scene, page, photo):
        width, height = original.size
        copies = {"resized": original.resize((width // 2, height // 2)), "recompressed": _jpeg(original, 35),
                  "cropped": original.crop((int(width * .04), int(height * .01), width - int(width * .01), height - int(height * .04))),
                  "mirrored": ImageOps.mirror(original), "shifted": _shifted(original, int(width * .025), -int(height * .02))}
        for kind, copy in copies.items():
            found = compare(original, copy)
            assert found.same, (kind, found)
            assert compare(copy, original).same, kind
        assert compare(original, copies["mirrored"]).mirrored
    edited = list(lines)
    edited[7] = "line 7: payment received with thanks"  # one line of twenty
    near_misses = {
        "the same shape elsewhere": (scene, _scene("circle", green, (150, 190))),
        "another shape of the same colour": (scene, _scene("hexagon", green, (90, 120))),
        "the same scene in another colour": (scene, _scene("circle", (40, 70, 220), (90, 120))),
        "a lighter background": (scene, _scene("circle", green, (90, 120), grey=150)),
        "a page with one line changed": (page, _page(edited)),
        "another photograph": (photo, Image.open(photos["coffee"]).convert("RGB").resize(photo.size)),
    }
    for label, (first, second) in near_misses.items():
        assert not compare(first, second).same, label


def _shifted(image: Image.Image, dx: int, dy: int) -> Image.Image:
    moved = Image.new("RGB", image.size, image.getpixel((0, 0)))
    moved.paste(image, (dx, dy))
    return moved


def test_duplicates_group_real_copies_only_and_paths_only_lists_them(tmp_path: Path) -> None:
    """Flat scenes of one kind (the issue's case: a green circle grouped with a green hexagon and another green
    circle elsewhere), pages of one layout, and real copies among them."""
    from test_cli import run_cli

    library = tmp_path / "library"
    (library / "copies").mkdir(parents=True)
    green = (30, 170, 50)
    pictures = {"circle.png": _scene("circle", green, (90, 120)), "hexagon.png": _scene("hexagon", green, (90, 120)),
                "elsewhere.png": _scene("circle", green, (150, 190)), "blue.png": _scene("circle", (40, 70, 220), (90, 120)),
                "page_a.png": _page([f"report {n} quarterly figures approved" for n in range(18)]),
                "page_b.png": _page([f"report {n} quarterly figures pending" for n in range(18)])}
    for name, picture in pictures.items():
        picture.save(library / name)
    copies = {"copies/circle_small.jpg": pictures["circle.png"].resize((128, 128)),
              "copies/circle_mirrored.png": ImageOps.mirror(pictures["circle.png"]),
              "copies/page_a.jpg": _jpeg(pictures["page_a.png"].crop((12, 20, 594, 770)), 60)}
    for name, picture in copies.items():
        picture.save(library / name, quality=90)
    database, home = str(tmp_path / "dups.db"), tmp_path / "home"
    run_cli("--mode", "index", "--model", TEST_MODEL, "--milvus-uri", database, "--image-dir", str(library), home=home)
    listed = run_cli("--mode", "duplicates", "--model", TEST_MODEL, "--milvus-uri", database, "--paths-only", home=home)
    assert sorted(Path(p).relative_to(library).as_posix() for p in listed.stdout.splitlines()) == sorted(copies)
    with ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=database, device="cpu") as engine:
        found = engine.find_duplicates()
        groups = sorted(sorted(Path(r.path).name for r in group) for group in found.groups)
        assert groups == [["circle.png", "circle_mirrored.png", "circle_small.jpg"], ["page_a.jpg", "page_a.png"]]
        assert found.pairs_checked >= 3 and found.unreadable == 0
        (library / "copies" / "page_a.jpg").write_bytes(b"changed since it was indexed")
        again = engine.find_duplicates()
        assert [sorted(Path(r.path).name for r in g) for g in again.groups] == [groups[0]] and again.unreadable >= 1
