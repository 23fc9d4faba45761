"""Duplicates: real photographs and their resized, recompressed, 5 %-cropped and mirrored copies group with
their original, best copy first; different photos (even ones the test model ranks as close as copies)
and scenes of the same kind do not. Through the real stores, the CLI and the HTTP API."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import TEST_MODEL, TEST_RUNTIME
from http_server import running_server
from PIL import Image, ImageOps

from image_search import ImageSearchEngine
from milvus_store import ImageRecord, MilvusStore, Near, SearchFilter, path_id
from photoseek.engine.duplicates import DEFAULT_SIMILARITY, find_duplicates
from photoseek.errors import InvalidArgumentError
from photoseek.indexing.perceptual import hash_distance, perceptual_hashes
from photoseek.photo_metadata import PhotoMetadata

COPIES = ("resized", "recompressed", "cropped", "mirrored")


def build_duplicates(folder: Path, photos: dict[str, Path]) -> dict[str, set[str]]:
    """Each photograph and four copies (in another folder, written later), plus 30 scenes of few kinds;
    returns the true groups by file name."""
    from make_scenes import write_scenes

    truth = {}
    (folder / "copies").mkdir(parents=True)
    for number, (name, source) in enumerate(sorted(photos.items())):
        image = Image.open(source).convert("RGB")
        width, height = image.size
        original = folder / f"{name}.jpg"
        image.save(original, quality=92)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=35)
        variants = {"resized": image.resize((width // 3, height // 3)), "recompressed": Image.open(io.BytesIO(buffer.getvalue())),
                    "cropped": image.crop((int(width * .025), int(height * .025), width - int(width * .025), height - int(height * .025))),
                    "mirrored": ImageOps.mirror(image)}
        for kind, variant in variants.items():
            variant.save(folder / "copies" / f"{name}_{kind}.jpg", quality=90)
            os.utime(folder / "copies" / f"{name}_{kind}.jpg", (2e9, 2e9))  # the copies are newer than the original
        os.utime(original, (1.5e9 + number, 1.5e9 + number))
        truth[name] = {f"{name}.jpg", *(f"{name}_{kind}.jpg" for kind in COPIES)}
    write_scenes(folder / "scenes", count=30, seed=7)
    return truth


def pairs(groups: list[set[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for group in groups for p in itertools.combinations(sorted(group), 2)}


def test_the_hash_tells_copies_from_different_photographs(photos: dict[str, Path]) -> None:
    hashes = {}
    for name, path in photos.items():
        image = Image.open(path).convert("RGB")
        width, height = image.size
        a, a_mirror = perceptual_hashes(image)
        hashes[name] = (a, a_mirror)
        for copy in (image.resize((width // 3, height // 3)), ImageOps.mirror(image),
                     image.crop((int(width * .025), int(height * .025), width - int(width * .025), height - int(height * .025)))):
            assert hash_distance(a, a_mirror, perceptual_hashes(copy)[0]) <= 14, name
    for (_, (a, a_mirror)), (_, (b, _)) in itertools.combinations(hashes.items(), 2):
        assert hash_distance(a, a_mirror, b) >= 20
    assert hash_distance(-1, -1, 0) == 64 and hash_distance(-(2**63), 0, 2**63 - 1) == 63  # hashes are signed 64-bit
    assert all(-(2**63) <= h < 2**63 for pair in hashes.values() for h in pair)  # what a Milvus INT64 holds
    assert hash_distance(0b1011, -1, 0) == 3 and hash_distance(-1, 0b1011, 0) == 3  # the nearer of the photo and its mirror
    flat = perceptual_hashes(Image.new("RGB", (50, 40), (90, 90, 90)))
    assert flat == (0, 0)  # no layout to hash: reads as "no hash", never as everyone's duplicate


def test_the_hash_is_the_textbook_phash(photos: dict[str, Path]) -> None:
    """Hashes are kept in the index, so a change of how they are made (another thumbnail filter, another
    transform) would quietly stop new copies matching old rows. Checked against SciPy's orthonormal DCT-II
    of the Lanczos 32x32 grey thumbnail, for each photograph and for its mirror image."""
    from scipy.fft import dctn

    def textbook(grey: np.ndarray) -> int:
        low = dctn(grey, type=2, norm="ortho")[:8, :8].flatten()
        above = low > np.median(low[1:])
        above[0] = False
        return int("".join("1" if bit else "0" for bit in above), 2)

    for name, path in photos.items():
        image = Image.open(path)
        grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
        assert perceptual_hashes(image) == (textbook(grey), textbook(grey[:, ::-1])), name


@pytest.fixture(scope="module")
def duplicates_library(photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]]]:
    folder = tmp_path_factory.mktemp("duplicates")
    return folder, build_duplicates(folder, photos)


@pytest.mark.slow
@pytest.mark.mutation
def test_copies_group_with_their_original_best_first(duplicates_library: tuple[Path, dict[str, set[str]]], store_uri: str,
                                                     collection_name: str) -> None:
    folder, truth = duplicates_library
    with ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=store_uri, collection_name=collection_name, device="cpu") as engine:
        assert engine.index_directory(folder).indexed == 80
        found = engine.find_duplicates()
        groups = [{Path(r.path).name for r in group} for group in found.groups]
        expected_pairs, found_pairs = pairs(list(truth.values())), pairs(groups)
        precision = len(found_pairs & expected_pairs) / max(1, len(found_pairs))
        recall = len(found_pairs & expected_pairs) / len(expected_pairs)
        print(f"duplicates at the defaults: precision {precision:.3f}, recall {recall:.3f}, {len(groups)} groups")
        assert sorted(map(sorted, groups)) == sorted(map(sorted, truth.values()))  # no scene, no other photo joins
        for group in found.groups:  # the original: most pixels (tied with two copies), then the oldest
            assert "/copies/" not in group[0].path and group[0].score == pytest.approx(1.0, abs=1e-4)
            assert [r.rank for r in group] == list(range(1, 6))
        assert found.photos_compared == 80 and found.without_hash == 0
        inside = engine.find_duplicates(search_filter=engine_filter(folder / "copies"))  # the copies among themselves
        assert sorted(len(g) for g in inside.groups) == [4] * 10
        assert engine.find_duplicates(max_hash_distance=0).groups != found.groups  # the hash decides, not the vectors alone
        engine.store.drop()


def engine_filter(folder: Path):  # type: ignore[no-untyped-def]
    return SearchFilter(path_prefix=str(folder) + os.sep)


@pytest.mark.slow
def test_cli_and_http_list_the_same_groups(photos: dict[str, Path], tmp_path: Path) -> None:
    from test_cli import run_cli

    from photoseek.servers.http_api import create_app

    # three of the photographs (the grouping itself is measured on all of them above): each pixel check costs time
    folder = tmp_path / "library"
    truth = build_duplicates(folder, {name: photos[name] for name in ("astronaut", "coffee", "rocket")})
    database, home = str(tmp_path / "dups.db"), tmp_path / "home"
    os.environ.pop("PHOTOSEEK_MILVUS_URI", None)
    run_cli("--mode", "index", "--model", TEST_MODEL, "--milvus-uri", database, "--image-dir", str(folder), home=home)
    listed = json.loads(run_cli("--mode", "duplicates", "--model", TEST_MODEL, "--milvus-uri", database, "--json", home=home).stdout)
    groups = [[Path(r["path"]).name for r in group] for group in listed["groups"]]
    assert sorted(map(sorted, groups)) == sorted(map(sorted, truth.values()))
    shown = run_cli("--mode", "duplicates", "--model", TEST_MODEL, "--milvus-uri", database, home=home).stdout
    assert "3 groups of copies among 45 photos, each checked pixel by pixel" in shown and "keep" in shown
    copies = run_cli("--mode", "duplicates", "--model", TEST_MODEL, "--milvus-uri", database, "--paths-only", home=home).stdout.splitlines()
    assert sorted(Path(p).name for p in copies) == sorted(f"{name}_{kind}.jpg" for name in truth for kind in COPIES)  # what to remove
    refused = run_cli("--mode", "duplicates", "--milvus-uri", database, "--threshold", "1.5", home=home, check=False)
    assert refused.returncode == 2 and "--threshold" in refused.stderr

    with ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=database, device="cpu") as engine:
        with pytest.raises(InvalidArgumentError, match="max_hash_distance"):
            engine.find_duplicates(max_hash_distance=65)
        app = create_app(engine, thumbnail_dir=tmp_path / "thumbs", index_roots=[str(folder)])
        with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            answer = client.get("/api/duplicates")
            assert answer.status_code == 200, answer.text
            assert [[Path(r["path"]).name for r in group] for group in answer.json()["groups"]] == groups
            assert client.get("/api/duplicates", params={"similarity": 0}).status_code in (400, 422)
            only = client.get("/api/duplicates", params={"folder": str(folder / "copies")}).json()
            assert sorted(len(g) for g in only["groups"]) == [4] * 3


def test_the_cli_defaults_are_the_librarys() -> None:
    from photoseek import cli
    from photoseek.engine import duplicates

    assert cli.DEFAULT_DUPLICATE_SIMILARITY == duplicates.DEFAULT_SIMILARITY
    assert cli.DEFAULT_MAX_HASH_DISTANCE == duplicates.DEFAULT_MAX_HASH_DISTANCE


# ------------------------------------------------------------------------------ the grouping, on the store alone


def _near(vector: np.ndarray, seed: int, scale: float) -> np.ndarray:
    moved = vector + np.random.default_rng(seed).normal(scale=scale, size=vector.shape).astype(np.float32)
    return moved / np.linalg.norm(moved)


@pytest.mark.slow
@pytest.mark.mutation  # in process, Lite: the mutation runs take it
def test_groups_are_exact_on_rows_of_known_hashes(tmp_path: Path) -> None:
    """Rows written straight into a Milvus Lite store, with hashes and sizes chosen to sit on each rule's
    edge: plain copies (no mirror in the group), a mirrored copy, 14 bits apart (in) and 15 (out), a
    close vector with a different photo's hash, the same hash on a far vector, rows indexed before hashes
    were kept (a whole search batch of them first), and ties broken by date taken, then by modified time."""
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    h = [int(x) for x in rng.integers(1, 2**62, size=12)]

    def flip(value: int, bits: int, shift: int = 0) -> int:
        return value ^ (((1 << bits) - 1) << shift)

    def photo(path: str, vector: np.ndarray, phash: int, mirror: int, size: tuple[int, int] = (4000, 3000),
              taken: float | None = None, mtime: float = 1000.0, at: tuple[float, float] | None = None) -> ImageRecord:
        return ImageRecord(path, vector, 1, mtime, f"{path_id(path) & (2**64 - 1):032x}",
                           metadata=PhotoMetadata(width=size[0], height=size[1], taken=taken, phash=phash, phash_mirror=mirror,
                                                  latitude=at[0] if at else None, longitude=at[1] if at else None))

    circle = Near(35.0, 135.0, 5.0)
    south, north, spans = circle.bounds()
    inside, corner = (35.01, 135.01), (north - 1e-4, spans[0][1] - 1e-4)  # the corner: in the box, not in the circle
    assert circle.contains(*inside) and not circle.contains(*corner)

    groups = [
        # plain copies: the older of the two largest first; the small one 14 bits from the newer but 17 from the older,
        # the copy kept: every member of a group is a copy of the one kept, so it joins neither
        [photo("/lib/a/newer.jpg", vectors[0], h[0], h[1], taken=2000.0, mtime=1.0, at=inside),
         photo("/lib/a/older.jpg", _near(vectors[0], 1, 0.02), flip(h[0], 3), flip(h[1], 2), taken=1000.0, mtime=2.0, at=inside),
         photo("/lib/a/small.jpg", _near(vectors[0], 2, 0.02), flip(h[0], 14, 20), flip(h[1], 14, 20), size=(800, 600),
               taken=500.0)],  # the oldest, but the fewest pixels: last
        # a mirrored copy (its hash is the original's mirror); no date: the older file first (the longer path)
        [photo("/lib/b/mirrored-copy.jpg", _near(vectors[1], 3, 0.02), h[3], h[2], size=(2000, 1000), mtime=40.0, at=inside),
         photo("/lib/x/original.jpg", vectors[1], h[2], h[3], size=(2000, 1000), mtime=50.0, at=corner)],
        [photo("/lib/c/z.jpg", vectors[2], h[4], h[5]), photo("/lib/c/a.jpg", _near(vectors[2], 4, 0.02), h[4], h[5], size=(10, 10))],
    ]
    # close, another photo; its mirror's hash is 3 bits from a/newer's mirror: hashes are compared with hashes
    apart = [photo("/lib/d/15bits.jpg", _near(vectors[0], 5, 0.02), flip(h[0], 15, 40), flip(h[1], 3)),
             photo("/lib/d/far.jpg", vectors[3], h[2], h[3]),  # the same hash as b/original, far from it: not a candidate
             # the same hash, cosine exactly 0.5 (unit vectors of 1 and of halves: no rounding), away from the fillers
             photo("/lib/f/one.jpg", -np.eye(8, dtype=np.float32)[0], h[6], h[7]),
             photo("/lib/f/two.jpg", np.asarray([-0.5, 0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0], dtype=np.float32), h[6], h[7])]
    assert float(vectors[3] @ vectors[1]) < DEFAULT_SIMILARITY
    # the rows read first (ids ascending) are 300 without hashes: a whole search batch with nothing to compare
    paths = sorted((f"/lib/old/{i}.jpg" for i in range(200_000)), key=path_id)[:300]
    filler_paths = [p for p in (f"/lib/e/{i}.jpg" for i in range(400)) if path_id(p) > path_id(paths[-1])][:300]
    fillers = [photo(path, _near(np.ones(8, dtype=np.float32), 1000 + i, 1.0), int(rng.integers(1, 2**62)),
                     int(rng.integers(1, 2**62))) for i, path in enumerate(filler_paths)]  # unrelated photos: more than one batch
    hashed = [r for group in groups for r in group] + apart + fillers
    unhashed = [ImageRecord(p, _near(np.ones(8, dtype=np.float32), 100 + i, 1.0), 1, 1.0, f"{i:032x}",
                            metadata=PhotoMetadata() if i % 50 else None)  # None: a row whose header was never read
                for i, p in enumerate(paths)]
    assert max(path_id(r.path) for r in unhashed) < min(path_id(r.path) for r in hashed)
    store = MilvusStore(uri=str(tmp_path / "store.db"), collection_name="dups")
    store.open_collection("test-model::v0", 8)
    store.upsert(unhashed + hashed)
    store.flush()
    counted: list[int] = []
    # the candidate rules alone (no files behind these rows to confirm pixels from), at the 14 bits they were built on
    report = find_duplicates(store, max_hash_distance=14, progress=counted.append)
    found = [[hit.fields["path"] for hit in group] for group in report.groups]
    assert found == [["/lib/a/older.jpg", "/lib/a/newer.jpg"],  # by path when of one size
                     ["/lib/b/mirrored-copy.jpg", "/lib/x/original.jpg"], ["/lib/c/z.jpg", "/lib/c/a.jpg"]]
    for group, hits in zip(groups, report.groups, strict=True):
        best = next(r for r in group if r.path == hits[0].fields["path"]).vector
        for hit in hits:
            vector = next(r for r in group if r.path == hit.fields["path"]).vector
            assert hit.score == pytest.approx(float(best @ vector), abs=1e-5)
        assert "vector" not in hits[0].fields and all(hit.id == path_id(hit.fields["path"]) for hit in hits)
    assert (report.photos_compared, report.without_hash) == (len(hashed), len(unhashed))
    # "at least `similarity` close": the pair exactly 0.5 apart is a candidate at 0.5, not a hair above it
    pair = {"/lib/f/one.jpg", "/lib/f/two.jpg"}
    assert pair in [{hit.fields["path"] for hit in group} for group in find_duplicates(store, 0.5, 14).groups]
    above = float(np.nextafter(0.5, 1.0))
    assert pair not in [{hit.fields["path"] for hit in group} for group in find_duplicates(store, above, 14).groups]
    assert counted == sorted(counted) and len(counted) >= 2 and counted[-1] == len(hashed), counted  # after each batch
    # within 5 km: the two of a/ that have a position; b/'s original is in the box around the circle, not in it
    near = find_duplicates(store, max_hash_distance=14, search_filter=SearchFilter(near=circle))
    assert [[hit.fields["path"] for hit in group] for group in near.groups] == [["/lib/a/older.jpg", "/lib/a/newer.jpg"]]
    assert near.photos_compared == 3
    with ImageSearchEngine(store=store) as engine:  # the engine confirms each pair from its files: these rows have none
        answer = engine.find_duplicates(max_hash_distance=14)
        assert answer.groups == [] and answer.pairs_checked == 0 and answer.unreadable >= 4
        assert (answer.photos_compared, answer.without_hash) == (len(hashed), len(unhashed))
        assert engine.find_duplicates(max_hash_distance=64, similarity=1.0).unreadable == 0  # no vector is that close here
    assert [len(g) for g in find_duplicates(store, max_hash_distance=0).groups] == [2, 2]  # identical hashes only
    assert store.count() == len(unhashed) + len(hashed)  # a store passed in is the caller's: still open
    store.close()


@pytest.mark.parametrize(("arguments", "says"), [
    ({"similarity": 0}, "similarity must be more than 0 and at most 1, got 0"),
    ({"similarity": 1.01}, "similarity must be more than 0 and at most 1, got 1.01"),
    ({"max_hash_distance": -1}, "max_hash_distance must be a whole number of bits from 0 to 64, got -1"),
    ({"max_hash_distance": 65}, "max_hash_distance must be a whole number of bits from 0 to 64, got 65"),
    ({"max_hash_distance": 1.5}, "got 1.5"),
    ({"max_hash_distance": True}, "got True"),
])
def test_duplicate_thresholds_are_checked(tmp_path: Path, arguments: dict[str, float], says: str) -> None:
    with ImageSearchEngine(milvus_uri=str(tmp_path / "none.db")) as engine:
        with pytest.raises(InvalidArgumentError, match=re.escape(says)):
            engine.find_duplicates(**arguments)  # type: ignore[arg-type]
        nothing = engine.find_duplicates(similarity=1.0, max_hash_distance=64)  # the edges are allowed; no index, no groups
        assert (nothing.groups, nothing.photos_compared, nothing.without_hash) == ([], 0, 0)
        assert engine.store.collection_info() is None  # and none is made


@pytest.mark.slow
def test_groups_asked_for_again_compare_nothing_twice_and_a_changed_file_still_drops_out(
        photos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page or a server asked for the groups again reuses its pixel checks (0.2 s a pair on 2 cores), but still
    reads each file as indexed: a copy edited since indexing leaves its group as it did before."""
    import photoseek.engine.duplicates as duplicates

    folder = tmp_path / "library"
    folder.mkdir()
    image = Image.open(photos["astronaut"]).convert("RGB")
    image.save(folder / "astronaut.jpg", quality=92)
    image.resize((image.width // 2, image.height // 2)).save(folder / "astronaut_small.jpg", quality=90)
    ImageOps.mirror(image).save(folder / "astronaut_mirrored.jpg", quality=90)
    Image.open(photos["coffee"]).convert("RGB").save(folder / "coffee.jpg", quality=92)
    comparisons: list[int] = []
    real_compare = duplicates.compare

    def counted(*args: object, **kwargs: object) -> object:
        comparisons.append(1)
        return real_compare(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(duplicates, "compare", counted)
    with ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=str(tmp_path / "d.db"), device="cpu") as engine:
        engine.index_directory(folder)
        first = engine.find_duplicates(similarity=0.5)
        assert [sorted(Path(r.path).name for r in g) for g in first.groups] == [
            ["astronaut.jpg", "astronaut_mirrored.jpg", "astronaut_small.jpg"]]
        made = len(comparisons)
        assert made >= 2
        again = engine.find_duplicates(similarity=0.5)
        assert len(comparisons) == made  # nothing compared twice
        assert again.groups == first.groups and again.pairs_checked == first.pairs_checked
        with Image.open(folder / "astronaut_small.jpg") as small:  # edited after indexing: not read as indexed
            edited = small.copy()
        edited.paste((255, 0, 0), (0, 0, 40, 40))
        edited.save(folder / "astronaut_small.jpg", quality=90)
        after = engine.find_duplicates(similarity=0.5)
        assert [sorted(Path(r.path).name for r in g) for g in after.groups] == [["astronaut.jpg", "astronaut_mirrored.jpg"]]
        assert after.unreadable >= 1
