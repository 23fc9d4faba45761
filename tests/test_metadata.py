"""Photo metadata: what real photos' EXIF/XMP headers say, read as a person reads them; the filters on it
through the real stores (exact top-k under a position filter); collections indexed before metadata
was kept gaining it without re-encoding; the CLI and HTTP surfaces."""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import TEST_MODEL, TEST_RUNTIME, create_schema_1_collection
from http_server import running_server
from PIL import ExifTags, Image

from image_search import ImageSearchEngine
from milvus_store import Near, SearchFilter, metadata_from_row, photo_filter
from photoseek.errors import InvalidArgumentError
from photoseek.indexing.decode import decode_photo, photo_metadata
from photoseek.indexing.perceptual import hash_distance
from photoseek.photo_metadata import PhotoMetadata, distance_km, parse_date, parse_when
from photoseek.store.records import METADATA_VERSION, camera_words
from photoseek.store.schema import UPGRADE_SUFFIX

DAY = 86_400.0


def write_photo(path: Path, base: Path, *, make: str | None = None, model: str | None = None, taken: str | None = None,
                offset: str | None = None, lens: str | None = None, gps: tuple[float, float] | None = None,
                orientation: int | None = None, size: tuple[int, int] | None = None, xmp: bytes | None = None) -> Path:
    """A real photograph (`base`) saved with the EXIF a camera writes."""
    image = Image.open(base).convert("RGB")
    if size:
        image = image.resize(size)
    exif = Image.Exif()
    if make:
        exif[ExifTags.Base.Make] = make
    if model:
        exif[ExifTags.Base.Model] = model
    if orientation:
        exif[ExifTags.Base.Orientation] = orientation
    details = exif.get_ifd(ExifTags.IFD.Exif)
    if taken:
        details[ExifTags.Base.DateTimeOriginal] = taken
    if offset:
        details[ExifTags.Base.OffsetTimeOriginal] = offset
    if lens:
        details[ExifTags.Base.LensModel] = lens
    if gps:
        position = exif.get_ifd(ExifTags.IFD.GPSInfo)
        for ref_tag, value_tag, value, hemispheres in ((1, 2, gps[0], "NS"), (3, 4, gps[1], "EW")):
            degrees = abs(value)
            whole, minutes = int(degrees), (degrees - int(degrees)) * 60
            position[ref_tag] = hemispheres[0] if value >= 0 else hemispheres[1]
            position[value_tag] = (float(whole), float(int(minutes)), round((minutes - int(minutes)) * 60, 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=90, exif=exif, **({"xmp": xmp} if xmp else {}))
    return path


KYOTO, OSAKA, SYDNEY, FIJI_EAST, FIJI_WEST = (35.0116, 135.7681), (34.6937, 135.5023), (-33.8688, 151.2093), (-16.5, 179.95), (-16.5, -179.95)


@pytest.fixture(scope="module")
def library(photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.mktemp("metadata_library"), photos)


def build_library(folder: Path, p: dict[str, Path]) -> Path:
    """Ten real photos whose headers differ in one thing at a time."""
    write_photo(folder / "kyoto_canon.jpg", p["chelsea"], make="Canon", model="Canon EOS 5D Mark IV", taken="2019:06:14 17:03:22",
                offset="+09:00", lens="EF24-70mm f/2.8L II USM", gps=KYOTO, size=(600, 400))
    write_photo(folder / "osaka_iphone.jpg", p["coffee"], make="Apple", model="iPhone 12", taken="2019:06:15 09:00:00",
                offset="+09:00", gps=OSAKA, size=(400, 300))
    write_photo(folder / "sydney_iphone.jpg", p["rocket"], make="Apple", model="iPhone 12", taken="2020:01:02 08:00:00",
                offset="+11:00", gps=SYDNEY, size=(300, 400))
    write_photo(folder / "fiji_east.jpg", p["astronaut"], make="NIKON CORPORATION", model="NIKON D750", taken="2018:12:31 23:59:59",
                gps=FIJI_EAST, size=(320, 240))
    write_photo(folder / "fiji_west.jpg", p["camera"], make="NIKON CORPORATION", model="NIKON D750", taken="2019:01:01 00:00:01",
                gps=FIJI_WEST, size=(320, 240))
    write_photo(folder / "rotated.jpg", p["coins"], make="Canon", model="Canon EOS R5", taken="2019:06:30 23:00:00",
                orientation=6, size=(640, 200))
    write_photo(folder / "no_clock.jpg", p["moon"], make="Canon", model="Canon PowerShot G7", taken="0000:00:00 00:00:00", size=(200, 200))
    write_photo(folder / "null_island.jpg", p["stereo_motorcycle"], gps=(0.0, 0.0), taken="2019:07:01 00:00:00", size=(256, 200))
    write_photo(folder / "xmp_only.jpg", p["hubble_deep_field"], size=(256, 256), xmp=(
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:DateTimeOriginal="2019-06-20T10:30:00+09:00" '
        b'exif:GPSLatitude="35,0.696N" exif:GPSLongitude="135,46.086E"/></rdf:RDF></x:xmpmeta>'))
    Image.open(p["retina"]).convert("RGB").resize((500, 500)).save(folder / "plain.png")  # no header at all
    return folder


# ------------------------------------------------------------------------------------------- reading headers

def test_headers_are_read_as_a_person_reads_them(library: Path) -> None:
    read = {p.name: decode_photo(p.read_bytes())[1] for p in library.iterdir()}
    kyoto = read["kyoto_canon.jpg"]
    assert kyoto.camera == "Canon EOS 5D Mark IV"  # not "Canon Canon EOS 5D Mark IV"
    assert kyoto.lens == "EF24-70mm f/2.8L II USM"
    assert kyoto.taken == parse_when("2019-06-14T17:03:22") and kyoto.taken_offset_minutes == 9 * 60
    assert distance_km(kyoto.latitude or 0, kyoto.longitude or 0, *KYOTO) < 0.01
    assert (kyoto.width, kyoto.height, kyoto.orientation) == (600, 400, None)
    assert read["osaka_iphone.jpg"].camera == "Apple iPhone 12"  # the make is not in the model: both
    assert read["fiji_east.jpg"].camera == "NIKON D750"
    sydney = read["sydney_iphone.jpg"]
    assert sydney.latitude is not None and sydney.latitude < 0 and sydney.taken_offset_minutes == 11 * 60  # south is negative
    assert read["fiji_west.jpg"].longitude is not None and read["fiji_west.jpg"].longitude < 0  # west is negative
    assert read["fiji_east.jpg"].taken_offset_minutes is None  # no offset written: not invented
    rotated = read["rotated.jpg"]
    assert (rotated.width, rotated.height, rotated.orientation) == (200, 640, 6)  # as displayed: turned a quarter
    assert read["no_clock.jpg"].taken is None  # a camera without a clock writes zeros
    assert read["null_island.jpg"].latitude is None and read["null_island.jpg"].taken is not None  # 0,0: no fix
    xmp = read["xmp_only.jpg"]
    assert xmp.taken == parse_when("2019-06-20T10:30") and xmp.taken_offset_minutes == 9 * 60
    assert distance_km(xmp.latitude or 0, xmp.longitude or 0, *KYOTO) < 0.05
    assert replace(read["plain.png"], phash=None, phash_mirror=None) == PhotoMetadata(width=500, height=500)
    small = photo_metadata(library / "kyoto_canon.jpg")  # decoded at 1/8 scale, for rows indexed before
    assert replace(small, phash=None, phash_mirror=None) == replace(kyoto, phash=None, phash_mirror=None)
    assert small.phash is not None and hash_distance(small.phash, small.phash_mirror or 0, kyoto.phash or 0) <= 2


def test_a_broken_header_costs_nothing_but_itself(tmp_path: Path, photos: dict[str, Path]) -> None:
    good = write_photo(tmp_path / "good.jpg", photos["coffee"], make="Canon", model="EOS", taken="2019:06:14 17:03:22", size=(64, 48))
    data = bytearray(good.read_bytes())
    start = data.index(b"Exif\x00\x00") + 6
    data[start + 8 : start + 40] = b"\xff" * 32  # the IFD's entry count and first entries: garbage
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(bytes(data))
    image, metadata = decode_photo(broken.read_bytes())
    assert image.size == (64, 48) and (metadata.width, metadata.height) == (64, 48)
    bad_date = write_photo(tmp_path / "bad_date.jpg", photos["coffee"], taken="2019:13:45 99:00:00", offset="+99:00", size=(32, 32))
    assert decode_photo(bad_date.read_bytes())[1].taken is None


def test_distances_are_great_circle_kilometres() -> None:
    assert distance_km(0, 0, 0, 1) == pytest.approx(111.19508, abs=1e-5)  # a degree of the equator, R = 6371.0088 km
    assert distance_km(0, 0, 0, 180) == pytest.approx(20015.1144, abs=1e-3)  # antipodes: half the circumference
    for width, refused in ((1, False), (0, True), (-3, True), (True, True), (1.5, True)):
        if refused:
            with pytest.raises(InvalidArgumentError, match=rf"min_width must be a whole number of pixels, 1 or more, got {width!r}"):
                photo_filter(min_width=width)  # type: ignore[arg-type]
        else:
            assert photo_filter(min_width=width) == {"min_width": width}


def test_metadata_reads_the_same_in_json() -> None:
    """to_dict is what the HTTP API and --json give for each result's header fields."""
    metadata = PhotoMetadata(taken=1.5, taken_offset_minutes=540, camera="Canon EOS 5D", lens="EF 50mm", latitude=35.0, longitude=135.7,
                             width=4000, height=3000, orientation=6, phash=-5, phash_mirror=7)
    assert metadata.to_dict() == {"taken": 1.5, "taken_offset_minutes": 540, "camera": "Canon EOS 5D", "lens": "EF 50mm", "latitude": 35.0,
                                  "longitude": 135.7, "width": 4000, "height": 3000, "orientation": 6, "phash": -5, "phash_mirror": 7}


def test_a_camera_is_found_by_any_run_of_its_words() -> None:
    # `--camera "eos 5d"` finds a "Canon EOS 5D Mark IV": each run of consecutive words is stored with the row
    assert camera_words("Canon EOS 5D  Mark IV") == [
        "canon", "canon eos", "canon eos 5d", "canon eos 5d mark", "canon eos 5d mark iv", "eos", "eos 5d", "eos 5d mark",
        "eos 5d mark iv", "5d", "5d mark", "5d mark iv", "mark", "mark iv", "iv"]
    assert camera_words("  ") == []
    many = camera_words(" ".join(f"w{i}" for i in range(20)))  # 210 runs; the schema holds 64
    assert len(many) == 64 and many[:2] == ["w0", "w0 w1"] and "" not in many


def test_dates_and_positions_as_people_type_them() -> None:
    assert parse_when("2019-06-30", end_of_day=True) - parse_when("2019-06-30") == DAY  # "before June 30" includes it
    assert parse_when("2019-06-30T12:00", end_of_day=True) == parse_when("2019-06-30") + DAY / 2
    assert parse_when("2019:06:30 12:00:00") == parse_when("2019-06-30T12:00:00")
    assert parse_when("2016:12:31 23:59:60") == parse_when("2016-12-31T23:59:59") + 1  # a leap second is a date
    fields = photo_filter(taken_after="2019-06-01", taken_before="2019-06-30", camera="  EOS  5D ", near="35.01, 135.77, 5", min_width=800)
    assert fields == {"taken_after": parse_when("2019-06-01"), "taken_before": parse_when("2019-07-01"), "camera": "EOS  5D",
                      "near": Near(35.01, 135.77, 5.0), "min_width": 800}
    assert 'array_contains(camera_words, "eos 5d")' in SearchFilter(**fields).expression()
    for arguments, named in ((dict(taken_after="June"), "taken_after"), (dict(taken_before="2019-02-30"), "taken_before"),
                             (dict(near="35,135"), "near"), (dict(near="91,0,1"), "near"), (dict(near="0,0,-1"), "near"),
                             (dict(near="nan,0,1"), "near"), (dict(min_width=0), "min_width")):
        with pytest.raises(InvalidArgumentError, match=named):
            photo_filter(**arguments)  # type: ignore[arg-type]


def _utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=timezone.utc).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(("written", "read"), [
    ("2019:06:14 17:03:22", (_utc(2019, 6, 14, 17, 3, 22), None)),  # EXIF
    ("2019-06-14T17:03:22.25", (_utc(2019, 6, 14, 17, 3, 22) + 0.25, None)),  # XMP, with a fraction
    ("2019:06:14 17:03", (_utc(2019, 6, 14, 17, 3), None)),
    ("  2019-06-14  ", (_utc(2019, 6, 14), None)),
    ("2019-06-14T17:03:22Z", (_utc(2019, 6, 14, 17, 3, 22), 0)),
    ("2019-06-14T17:03:22+05:45", (_utc(2019, 6, 14, 17, 3, 22), 345)),  # the offset is beside the wall clock, not applied
    ("2019-06-14T17:03:22-0330", (_utc(2019, 6, 14, 17, 3, 22), -210)),
    ("2019-06-14T17:03:22+14:00", (_utc(2019, 6, 14, 17, 3, 22), 840)),  # Kiribati: the furthest offset there is
    ("2019-06-14T17:03:22-14:00", (_utc(2019, 6, 14, 17, 3, 22), -840)),
    ("2019-06-14T17:03:22+14:01", (_utc(2019, 6, 14, 17, 3, 22), None)),  # no such offset: the date stays, the offset goes
    ("1800:01:01 00:00:00", (_utc(1800, 1, 1), None)),
    ("9999:12:31 23:59:59", (_utc(9999, 12, 31, 23, 59, 59), None)),
    ("2016:12:31 23:59:60", (_utc(2016, 12, 31, 23, 59, 59) + 1, None)),  # a leap second
    *((bad, (None, None)) for bad in (
        None, "", "June", "2019-6-14", "0000:00:00 00:00:00",  # a camera without a clock
        "1799:12:31 23:59:59", "2019:00:10", "2019:13:01", "2019:06:00", "2019:06:32", "2019:02:30",
        "2019:06:14 24:00:00", "2019:06:14 23:60:00", "2019:06:14 23:59:61")),
])
def test_each_date_a_header_or_a_person_writes_reads_exactly(written: str | None, read: tuple[float | None, int | None]) -> None:
    assert parse_date(written) == read
    assert [type(part) for part in parse_date(written)] == [type(part) for part in read]  # the offset is kept in an integer field


def test_the_box_holds_every_point_of_the_circle() -> None:
    rng = random.Random(5)
    centres = [(0.0, 0.0), (35.0, 135.7), (-16.5, 179.9), (-16.5, -179.9), (88.5, 10.0), (-89.9, 0.0), (60.0, -179.0)]
    centres += [(rng.uniform(-89, 89), rng.uniform(-180, 180)) for _ in range(40)]
    for latitude, longitude in centres:
        for km in (0.5, 50.0, 900.0, 5000.0):
            near = Near(latitude, longitude, km)
            south, north, spans = near.bounds()
            for _ in range(60):  # points on and inside the circle, walked from its centre
                bearing, reach = rng.uniform(0, 2 * math.pi), km * math.sqrt(rng.random()) * 0.999
                lat2, lon2 = _destination(latitude, longitude, bearing, reach)
                assert near.contains(lat2, lon2)
                assert south <= lat2 <= north and any(w <= lon2 <= e for w, e in spans), (latitude, longitude, km, lat2, lon2)
    assert not Near(35.0, 135.7, 10).contains(34.6937, 135.5023)  # Osaka is ~40 km from Kyoto


def test_the_box_reaches_the_rim_and_no_further() -> None:
    """The store narrows a search to the box: a box short of the rim loses photos at the edge of the
    circle, and one far wider than the circle makes the store read rows it cannot use."""
    for latitude, longitude in ((0.0, 0.0), (35.0, 135.7), (-40.0, -70.0), (60.0, 10.0), (-16.5, 179.9), (-16.5, -179.9)):
        for km in (1.0, 50.0, 900.0):
            near = Near(latitude, longitude, km)
            south, north, spans = near.bounds()
            rim = [_destination(latitude, longitude, math.radians(degrees), km * (1 - 1e-9)) for degrees in range(0, 360, 2)]
            for lat2, lon2 in rim:  # the very edge (a photo exactly km away is inside: contains uses <=)
                assert near.contains(lat2, lon2)
                assert south <= lat2 <= north and any(w <= lon2 <= e for w, e in spans), (latitude, longitude, km, lat2, lon2)
            reach = max(abs(lat2 - latitude) for lat2, _ in rim)
            assert north - south <= 2 * reach * 1.003, (latitude, km, north - south, reach)
            widest = max(abs((lon2 - longitude + 540) % 360 - 180) for _, lon2 in rim)
            assert all(w <= e for w, e in spans) and sum(e - w for w, e in spans) <= 2 * widest * 1.5, (latitude, longitude, km, spans)
    assert Near(80.0, 0.0, 2000).bounds()[2] == [(-180.0, 180.0)]  # reaches the pole's cap: every longitude
    somewhere = (48.8566, 2.3522)
    exactly = distance_km(35.0, 135.7, *somewhere)
    assert Near(35.0, 135.7, exactly).contains(*somewhere) and not Near(35.0, 135.7, exactly * (1 - 1e-9)).contains(*somewhere)


def test_a_position_is_checked_to_its_edges() -> None:
    for latitude, longitude, km in ((-90, 0, 1), (90, 0, 1), (0, -180, 1), (0, 180, 1), (0, 0, 20_100), (0, 0, 1e-6)):
        Near(latitude, longitude, km)  # the edges themselves are positions and distances
    for latitude, longitude in ((-90.001, 0), (90.001, 0), (0, -180.001), (0, 180.001)):
        with pytest.raises(InvalidArgumentError, match=rf"near: {latitude},{longitude} is not a position"):
            Near(latitude, longitude, 1)
    for km in (0, -1, 20_100.001):
        with pytest.raises(InvalidArgumentError, match=rf"more than 0 and at most 20100 km, got {km}"):
            Near(0, 0, km)
    with pytest.raises(InvalidArgumentError, match=r"taken_after: 'June' is not a date \(use YYYY-MM-DD"):
        photo_filter(taken_after="June")
    for text in ("35,135", "35,x,1", "nan,0,1"):
        with pytest.raises(InvalidArgumentError, match=rf"near: '{text}' is not LAT,LON,KM"):
            photo_filter(near=text)


def _destination(latitude: float, longitude: float, bearing: float, km: float) -> tuple[float, float]:
    delta, phi, lam = km / 6371.0088, math.radians(latitude), math.radians(longitude)
    phi2 = math.asin(math.sin(phi) * math.cos(delta) + math.cos(phi) * math.sin(delta) * math.cos(bearing))
    lam2 = lam + math.atan2(math.sin(bearing) * math.sin(delta) * math.cos(phi), math.cos(delta) - math.sin(phi) * math.sin(phi2))
    return math.degrees(phi2), (math.degrees(lam2) + 540) % 360 - 180


# ------------------------------------------------------------------------------------------- through the stores

def _names(results: list) -> set[str]:  # type: ignore[type-arg]
    return {Path(r.path).name for r in results}


@pytest.fixture()
def indexed(library: Path, store_uri: str, collection_name: str):  # type: ignore[no-untyped-def]
    engine = ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=store_uri, collection_name=collection_name, device="cpu")
    assert engine.index_directory(library).indexed == 10
    yield engine
    engine.store.drop()
    engine.close()


def _only(engine: ImageSearchEngine, **fields: object) -> set[str]:
    return _names(engine.search("a photo", top_k=50, search_filter=SearchFilter(**photo_filter(**fields))))  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.mutation
def test_filters_select_exactly_the_photos_whose_headers_match(indexed: ImageSearchEngine) -> None:
    engine = indexed
    assert _only(engine, camera="iphone") == {"osaka_iphone.jpg", "sydney_iphone.jpg"}
    assert _only(engine, camera="NIKON d750") == {"fiji_east.jpg", "fiji_west.jpg"}
    assert _only(engine, camera="canon") == {"kyoto_canon.jpg", "rotated.jpg", "no_clock.jpg"}
    assert _only(engine, camera="eos 5d") == {"kyoto_canon.jpg"}
    assert _only(engine, taken_after="2019-06-15", taken_before="2019-06-30") == {"osaka_iphone.jpg", "xmp_only.jpg", "rotated.jpg"}
    assert _only(engine, taken_before="2018-12-31") == {"fiji_east.jpg"}  # the whole last day, on the photo's own clock
    assert _only(engine, taken_after="2019-07-01") == {"null_island.jpg", "sydney_iphone.jpg"}
    assert _only(engine, min_width=400) == {"kyoto_canon.jpg", "osaka_iphone.jpg", "plain.png"}  # rotated is 200 wide as seen
    assert _only(engine, near="35.0116,135.7681,10") == {"kyoto_canon.jpg", "xmp_only.jpg"}
    assert _only(engine, near="35.0116,135.7681,60") == {"kyoto_canon.jpg", "xmp_only.jpg", "osaka_iphone.jpg"}
    assert _only(engine, near="35.0116,135.7681,40") == {"kyoto_canon.jpg", "xmp_only.jpg"}  # Osaka, 43 km: in the box, not the circle
    assert _only(engine, near="-16.5,180,10") == {"fiji_east.jpg", "fiji_west.jpg"}  # across the antimeridian
    assert _only(engine, near="0,0,100") == set()  # no fix is not a position
    assert _only(engine, camera="canon", taken_after="2019-06-20") == {"rotated.jpg"}
    kyoto = [r for r in engine.search("a photo", top_k=10) if r.path.endswith("kyoto_canon.jpg")][0]
    assert kyoto.metadata is not None and kyoto.metadata.camera == "Canon EOS 5D Mark IV" and kyoto.metadata.lens
    assert kyoto.metadata.taken_offset_minutes == 9 * 60  # the photo's own clock comes back from the store
    plain = [r for r in engine.search("a photo", top_k=10) if r.path.endswith("plain.png")][0]
    assert plain.metadata is not None and plain.metadata.phash is not None
    assert replace(plain.metadata, phash=None, phash_mirror=None) == PhotoMetadata(width=500, height=500)


@pytest.mark.slow
@pytest.mark.mutation
def test_a_position_filter_keeps_the_exact_top_k(indexed: ImageSearchEngine) -> None:
    """Milvus narrows to a box; the circle is decided after: the top k must still be the k best inside it."""
    engine = indexed
    circle = Near(35.0116, 135.7681, 60)
    everything = engine.search("a small red circle", top_k=50)
    inside = [r.path for r in everything if r.metadata and r.metadata.latitude is not None
              and circle.contains(r.metadata.latitude, r.metadata.longitude or 0)]
    assert len(inside) == 3
    for k in (1, 2, 3):
        found = engine.search("a small red circle", top_k=k, search_filter=SearchFilter(near=circle))
        assert [r.path for r in found] == inside[:k]


@pytest.mark.slow
@pytest.mark.mutation
def test_a_collection_indexed_before_metadata_gains_it_without_re_encoding(library: Path, store_uri: str, collection_name: str) -> None:
    from pymilvus import MilvusClient

    engine = ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=store_uri, collection_name=collection_name, device="cpu")
    engine.index_directory(library)
    rows = engine.store.get([r.id for r in engine.search("a photo", top_k=50)], with_vectors=True)
    properties = json.loads(engine.store._call("describe_collection", collection_name)["properties"]["image_search.meta"])
    engine.store.drop()
    engine.close()
    create_schema_1_collection(store_uri, collection_name, len(rows[0]["vector"]),
                               {k: v for k, v in properties.items() if k != "text_match"})
    client = MilvusClient(uri=store_uri)
    old_fields = ("id", "path", "description", "size", "mtime", "fingerprint", "ext", "vector")
    client.insert(collection_name, [{k: r[k] for k in old_fields} for r in rows])
    client.flush(collection_name)
    client.create_collection(collection_name + UPGRADE_SUFFIX, dimension=8)  # a copy an earlier upgrade left half made
    client.close()

    engine = ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=store_uri, collection_name=collection_name, device="cpu")
    try:
        assert len(engine.search("a photo", top_k=50)) == 10  # searched as it is
        with pytest.raises(InvalidArgumentError, match="run --mode index on its folders once"):
            engine.search("a photo", search_filter=SearchFilter(camera="iphone"))
        with pytest.raises(InvalidArgumentError, match="was indexed before perceptual hashes were kept: run --mode index on its "
                                                       r"folders once \(nothing is re-encoded\)"):
            engine.find_duplicates()
        summary = engine.index_directory(library)
        assert (summary.indexed, summary.unchanged, summary.metadata_read) == (0, 10, 10)  # nothing encoded
        assert _only(engine, camera="iphone") == {"osaka_iphone.jpg", "sydney_iphone.jpg"}
        after = {r["id"]: r for r in engine.store.get([r["id"] for r in rows], with_vectors=True)}
        for row in rows:
            assert np.allclose(after[row["id"]]["vector"], row["vector"], atol=1e-6)
            assert after[row["id"]]["meta_version"] == METADATA_VERSION
            assert (metadata_from_row(after[row["id"]]) or PhotoMetadata()).phash is not None  # hashes too, for duplicates
        assert engine.index_directory(library).metadata_read == 0  # read once
        info = engine.store.collection_info()
        assert info is not None and info.text_match == engine.store.supports_text_match()  # words searchable where they can be
        assert (info.model, info.dim, info.build) == (TEST_MODEL, len(rows[0]["vector"]), properties["build"])  # kept as they were
        if info.text_match:
            assert Path(engine.search("null island", top_k=3)[0].path).name == "null_island.jpg"  # found by its file name
    finally:
        engine.close()

    # an upgrade cut short after the old collection was dropped: the complete copy is put in its place
    client = MilvusClient(uri=store_uri)
    client.rename_collection(collection_name, collection_name + UPGRADE_SUFFIX)
    client.close()
    engine = ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=store_uri, collection_name=collection_name, device="cpu")
    try:
        assert _only(engine, camera="iphone") == {"osaka_iphone.jpg", "sydney_iphone.jpg"}
    finally:
        engine.store.drop()
        engine.close()


@pytest.mark.slow
def test_cli_and_http_filter_on_metadata(library: Path, tmp_path: Path) -> None:
    from test_cli import run_cli

    from photoseek.servers.http_api import create_app

    database, home = str(tmp_path / "meta.db"), tmp_path / "home"
    os.environ.pop("PHOTOSEEK_MILVUS_URI", None)
    run_cli("--mode", "index", "--model", TEST_MODEL, "--milvus-uri", database, "--image-dir", str(library), home=home)
    done = run_cli("--mode", "search", "--model", TEST_MODEL, "--milvus-uri", database, "--query", "a photo", "--top-k", "20", "--camera", "iPhone",
                   "--taken-after", "2019-06-01", "--json", home=home)
    found = json.loads(done.stdout)
    assert {Path(r["path"]).name for r in found} == {"osaka_iphone.jpg", "sydney_iphone.jpg"}
    assert found[0]["metadata"]["camera"] == "Apple iPhone 12" and found[0]["metadata"]["taken_offset_minutes"] in (540, 660)
    shown = run_cli("--mode", "search", "--model", TEST_MODEL, "--milvus-uri", database, "--query", "a photo", "--near", "35.0116,135.7681,10", home=home)
    assert "Canon EOS 5D Mark IV, EF24-70mm f/2.8L II USM" in shown.stdout and "2019-06-14 17:03 +09:00" in shown.stdout
    bad = run_cli("--mode", "search", "--model", TEST_MODEL, "--milvus-uri", database, "--query", "a photo", "--taken-after", "last june", home=home, check=False)
    assert bad.returncode == 2 and "--taken-after" in bad.stderr and "last june" in bad.stderr
    misplaced = run_cli("--mode", "index", "--model", TEST_MODEL, "--milvus-uri", database, "--image-dir", str(library), "--camera", "x", home=home, check=False)
    assert misplaced.returncode == 2 and "apply to --mode search, similar and duplicates" in misplaced.stderr

    engine = ImageSearchEngine(model_name=TEST_MODEL, runtime=TEST_RUNTIME, milvus_uri=database, device="cpu")
    try:
        app = create_app(engine, thumbnail_dir=tmp_path / "thumbs", index_roots=[str(library)])
        with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            answer = client.get("/api/search", params={"q": "a photo", "top_k": 20, "near": "-16.5,180,10"})
            assert answer.status_code == 200, answer.text
            assert {Path(r["path"]).name for r in answer.json()["results"]} == {"fiji_east.jpg", "fiji_west.jpg"}
            assert answer.json()["results"][0]["metadata"]["camera"] == "NIKON D750"
            batch = client.post("/api/search/batch", json={"queries": ["a photo"], "top_k": 20, "min_width": 400, "camera": "canon"})
            assert {Path(r["path"]).name for r in batch.json()["results"][0]["results"]} == {"kyoto_canon.jpg"}
            with open(library / "plain.png", "rb") as handle:  # the upload route takes the same fields as a form
                by_photo = client.post("/api/search/image", files={"file": ("q.png", handle, "image/png")},
                                       data={"top_k": "20", "camera": "iphone", "taken_after": "2019-07-01"})
            assert {Path(r["path"]).name for r in by_photo.json()["results"]} == {"sydney_iphone.jpg"}, by_photo.text
            for params, named in (({"near": "somewhere"}, "near"), ({"taken_before": "2019-02-30"}, "taken_before"),
                                  ({"min_width": "0"}, "min_width")):
                refused = client.get("/api/search", params={"q": "a photo", **params})
                assert refused.status_code in (400, 422) and named in refused.text, refused.text
    finally:
        engine.close()


# ------------------------------------------------------------------------ the values a user sees (round 2)

def _xmp_packet(latitude: str, longitude: str) -> bytes:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" '
            f'exif:GPSLatitude="{latitude}" exif:GPSLongitude="{longitude}"/></rdf:RDF></x:xmpmeta>').encode()


@pytest.mark.parametrize(("latitude", "longitude", "expected"), [
    ("40,42,46.08N", "74,0,21.6W", (40.7128, -74.006)),  # New York: west of Greenwich, with seconds
    ("33,52,7.68S", "151,12,33.48E", (-33.8688, 151.2093)),  # Sydney
    ("22,54,23.4S", "43,10,22.8W", (-22.9065, -43.1730)),  # Rio de Janeiro
    ("35,0.696N", "135,46.086E", (35.0116, 135.7681)),  # Kyoto, degrees and decimal minutes
])
def test_an_xmp_position_lands_in_its_hemisphere(tmp_path: Path, photos: dict[str, Path], latitude: str, longitude: str,
                                                 expected: tuple[float, float]) -> None:
    """Phones and editors that write no EXIF GPS write XMP: "DDD,MM,SS.ssH" or "DDD,MM.mmmH"."""
    path = write_photo(tmp_path / "xmp.jpg", photos["coffee"], size=(200, 150), xmp=_xmp_packet(latitude, longitude))
    found = photo_metadata(path)
    assert found.latitude == pytest.approx(expected[0], abs=1e-4) and found.longitude == pytest.approx(expected[1], abs=1e-4)


def test_the_date_taken_is_the_shutters_not_the_last_edits(tmp_path: Path, photos: dict[str, Path]) -> None:
    """EXIF DateTime is when a file was last changed (an editor rewrites it); DateTimeOriginal is the shot."""
    image = Image.open(photos["coffee"]).convert("RGB").resize((200, 150))
    exif = Image.Exif()
    exif[ExifTags.Base.DateTime] = "2024:03:01 12:00:00"  # edited years later
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = "2019:06:14 17:03:22"
    details[ExifTags.Base.OffsetTimeOriginal] = "-05:00"
    image.save(tmp_path / "edited.jpg", "JPEG", exif=exif)
    found = photo_metadata(tmp_path / "edited.jpg")
    assert found.taken == datetime(2019, 6, 14, 17, 3, 22, tzinfo=timezone.utc).timestamp()
    assert found.taken_offset_minutes == -300


@pytest.mark.parametrize(("offset", "shown"), [(-300, "-05:00"), (-210, "-03:30"), (330, "+05:30"), (0, "+00:00"), (None, "")])
def test_a_utc_offset_is_shown_as_people_write_it(offset: int | None, shown: str) -> None:
    from photoseek.results import describe_metadata

    taken = datetime(2019, 6, 14, 17, 3, tzinfo=timezone.utc).timestamp()
    line = describe_metadata(PhotoMetadata(taken=taken, taken_offset_minutes=offset))
    assert line == f"2019-06-14 17:03 {shown}".rstrip()
