"""Decoding real and broken files: every bad case becomes a reason, every odd mode a proper RGB image."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dng
from PIL import Image, ImageOps

from photoseek.errors import ImageDecodeError
from photoseek.indexing import decode
from photoseek.indexing.decode import decode_photo, load_rgb, photo_metadata
from photoseek.indexing.perceptual import perceptual_hashes
from photoseek.photo_metadata import PhotoMetadata

ROOT = str(Path(__file__).resolve().parents[1])


def test_real_photo_decodes_to_rgb(photos: dict[str, Path]) -> None:
    image = load_rgb(photos["chelsea"])
    assert image.mode == "RGB" and image.size == (451, 300)


def test_draft_decoding_matches_reference_embedding(photos: dict[str, Path], test_encoder) -> None:  # type: ignore[no-untyped-def]
    big = Image.open(photos["astronaut"]).resize((2048, 2048), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=92)
    data = buffer.getvalue()
    drafted = load_rgb(data, min_side=test_encoder.image_size * 2)
    assert max(drafted.size) < 2048  # the decoder really scaled down
    reference = Image.open(io.BytesIO(data)).convert("RGB")
    a, b = test_encoder.encode_images([drafted, reference])
    assert abs(np.linalg.norm(a) - 1) < 1e-5 and abs(np.linalg.norm(b) - 1) < 1e-5
    assert float(a @ b) > 0.999


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), "red")
    image.paste(Image.new("RGB", (20, 20), "blue"), (20, 0))  # blue on the right
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    for loaded in (load_rgb(path), load_rgb(Image.open(path))):  # a file, and an image already opened
        assert loaded.size == (20, 40)
        pixels = np.asarray(loaded)
        top, bottom = pixels[2, 10], pixels[37, 10]
        # turned a quarter clockwise: the left (red) half on top, the right (blue) half below
        assert top[0] > 150 and top[2] < 100 and bottom[2] > 150 and bottom[0] < 100


@pytest.mark.parametrize("mode", ["CMYK", "L", "1", "P", "LA", "RGBA", "I;16", "I", "F"])
def test_modes_convert_to_rgb(tmp_path: Path, photos: dict[str, Path], mode: str) -> None:
    source = Image.open(photos["coffee"]).convert("RGB").resize((64, 48))
    if mode == "I;16":
        converted = Image.fromarray(np.asarray(source.convert("L"), dtype=np.uint16) * 257)
    elif mode in ("I", "F"):
        converted = source.convert("L").convert(mode)
    else:
        converted = source.convert(mode)
    suffix = "tiff" if mode in ("CMYK", "I;16", "I", "F") else "png"
    path = tmp_path / f"image.{suffix}"
    converted.save(path)
    loaded = load_rgb(path)
    assert loaded.mode == "RGB" and loaded.size == (64, 48)
    grey = np.asarray(source.convert("L"), dtype=float)
    got = np.asarray(loaded.convert("L"), dtype=float)
    if mode != "1":  # 1-bit dithers, the rest must keep the picture
        assert np.corrcoef(grey.ravel(), got.ravel())[0, 1] > 0.9


def test_transparent_areas_become_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    path = tmp_path / "clear.png"
    image.save(path)
    assert np.asarray(load_rgb(path)).min() == 255


def _truncated(tmp_path: Path, photos: dict[str, Path]) -> Path:
    data = photos["rocket"].read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize("case,reason", [
    ("empty", "empty file (0 bytes)"),
    ("text", "not a recognised image format"),
    ("truncated", "truncated image: "),
    ("corrupt", "corrupt image: "),
    ("missing", "file not found"),
    ("folder", "is a directory"),
    ("permission", "permission denied"),
    ("io-error", "cannot read file: Input/output error"),
])
def test_bad_files_give_reasons(tmp_path: Path, photos: dict[str, Path], case: str, reason: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The reason a person reads, exactly (a prefix where Pillow's own words follow)."""
    import errno

    path = tmp_path / "bad.jpg"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not a picture")
    elif case == "truncated":
        path = _truncated(tmp_path, photos)
    elif case == "corrupt":  # a PNG whose image data is not zlib: Pillow opens it, then fails to decode
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
        data = buffer.getvalue()
        start = data.index(b"IDAT") + 4
        path.write_bytes(data[:start] + b"\x00" * 40 + data[start + 40:])
    elif case == "folder":
        path.mkdir()
    elif case in ("permission", "io-error"):  # what permission bits and a failing disk do (root ignores the bits)
        path.write_bytes(b"x")
        failure = PermissionError(errno.EACCES, "Permission denied") if case == "permission" else OSError(errno.EIO, "Input/output error")
        monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(failure))
    with pytest.raises(ImageDecodeError) as refused:
        load_rgb(path)
    assert refused.value.reason == reason if not reason.endswith(": ") else refused.value.reason.startswith(reason)
    if case == "truncated":
        assert "truncated" in refused.value.reason[len(reason):].lower()


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (5000, 5000)).save(path)  # tiny file, 25 megapixels
    with pytest.raises(ImageDecodeError) as refused:
        load_rgb(path, max_pixels=10_000_000)
    assert refused.value.reason == "decompression bomb: 5000x5000 pixels exceeds the limit of 10000000"
    assert load_rgb(path, max_pixels=25_000_000).size == (5000, 5000)  # exactly at the limit: allowed
    huge = tmp_path / "huge.png"  # beyond Pillow's own limit: refused when the header is read
    Image.new("1", (20_000, 20_000)).save(huge)
    with pytest.raises(ImageDecodeError) as refused:
        load_rgb(huge)
    assert refused.value.reason.startswith("decompression bomb: ") and "400000000 pixels" in refused.value.reason


def test_phone_heic_photos_are_indexed_upright(tmp_path: Path, photos: dict[str, Path], test_encoder) -> None:  # type: ignore[no-untyped-def]
    """An iPhone-style HEIC (upper-case extension, stored sideways with an EXIF orientation) is found by its photo."""
    import pillow_heif  # a runtime requirement, so HEIC is read everywhere

    from image_search import ImageSearchEngine

    assert pillow_heif is not None
    folder = tmp_path / "phone"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket", "camera"):
        (folder / f"{name}.jpg").write_bytes(photos[name].read_bytes())
    upright = Image.open(photos["chelsea"]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display", as phones write it
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "IMG_0001.HEIC", format="HEIF", exif=exif.tobytes(), quality=90)
    (folder / "IMG_0002.HEIC").write_bytes((folder / "IMG_0001.HEIC").read_bytes()[:200])  # cut short in a copy

    decoded = load_rgb(folder / "IMG_0001.HEIC")
    assert decoded.size == upright.size
    assert np.abs(np.asarray(decoded, dtype=np.float32) - np.asarray(upright, dtype=np.float32)).mean() < 3
    with ImageSearchEngine(encoder=test_encoder, milvus_uri=str(tmp_path / "h.db")) as engine:
        summary = engine.index_directory(folder)
        assert summary.indexed == 5 and [Path(f.path).name for f in summary.failed] == ["IMG_0002.HEIC"]
        assert Path(engine.search_by_image(photos["chelsea"], top_k=1)[0].path).name == "IMG_0001.HEIC"


def test_a_header_pillow_only_warns_about_still_decodes_and_prints_nothing(tmp_path: Path) -> None:
    """A scanner's TIFF whose Orientation tag has one value too many makes Pillow warn ("Metadata
    Warning", as it does of corrupt EXIF): the picture is fine. Decoded in threads, as indexing does,
    nothing is printed, a warning of the program's own still shows afterwards (per-call warning filters
    are not thread-safe and once lost such warnings), and under `python -W error` it still decodes."""
    import tifffile

    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, np.full((8, 12, 3), 100, np.uint8), photometric="rgb", extratags=[(274, "H", 2, (1, 1), False)])
    with pytest.warns(UserWarning, match="Metadata Warning"):
        Image.open(path)
    image, _ = decode_photo(path)
    assert image.size == (12, 8) and np.asarray(image)[0, 0].tolist() == [100, 100, 100]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a caller's own filter, set after ours: the warning is the file's reason
        with pytest.raises(ImageDecodeError, match=r"^cannot read image: Metadata Warning, tag 274 had too many entries: 2, expected 1$"):
            decode_photo(path)
    code = ("import sys, warnings\n"
            "from concurrent.futures import ThreadPoolExecutor\n"
            "from photoseek.indexing.decode import decode_photo\n"
            "with ThreadPoolExecutor(4) as pool:\n"
            f"    sizes = set(pool.map(lambda _: decode_photo({str(path)!r})[0].size, range(64)))\n"
            "assert sizes == {(12, 8)}, sizes\n"
            "if not sys.warnoptions:\n"
            "    warnings.warn('the program speaks', UserWarning)\n")
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "Metadata Warning" not in quiet.stderr and "UserWarning: the program speaks" in quiet.stderr, quiet.stderr
    strict = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert strict.returncode == 0, strict.stderr


def test_a_photo_past_pillows_warning_size_decodes_up_to_the_limit(tmp_path: Path) -> None:
    """Pillow warns of a decompression bomb from 89.5 megapixels: a 90-megapixel photo (a 108 MP phone's
    are bigger still) is within the 179-megapixel limit, and decodes."""
    path = tmp_path / "big.jpg"
    Image.new("L", (9500, 9500), 128).save(path, quality=50)  # 90.25 MP, a few hundred kilobytes
    assert load_rgb(path, min_side=224).size == (1188, 1188)  # drafted at 1/8
    # and nothing printed ("could be decompression bomb DOS attack"): in a fresh process, as pytest shows every warning
    code = f"from photoseek.indexing.decode import load_rgb; print(load_rgb({str(path)!r}, min_side=224).size)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert (run.returncode, run.stdout, run.stderr) == (0, "(1188, 1188)\n", "")
    with pytest.raises(ImageDecodeError, match=r"^decompression bomb: 9500x9500 pixels exceeds the limit of 90000000$"):
        load_rgb(path, min_side=224, max_pixels=90_000_000)


def test_pixel_values_survive_each_mode_exactly(tmp_path: Path) -> None:
    """Exact values, not only a similar picture: 16-bit scaled to 8, float and 32-bit integer greys kept,
    transparency composited on white in palette, grey+alpha and RGBA images."""
    ramp = np.tile(np.arange(0, 256, 5, dtype=np.uint8), (4, 1))  # 4 x 52 grey ramp
    cases = {
        "sixteen.tiff": Image.fromarray(ramp.astype(np.uint16) * 257),
        "int.tiff": Image.fromarray(ramp).convert("I"),
        "float.tiff": Image.fromarray(ramp.astype(np.float32)),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        grey = np.asarray(load_rgb(tmp_path / name))
        assert grey.shape == (4, 52, 3) and np.array_equal(grey[..., 0], ramp), name
    # past 8 bits: 32-bit integer and float greys are scaled by their brightest value (not clipped at 255);
    # a dark 16-bit image keeps its place in the 16-bit range (not stretched to white)
    wide = ramp.astype(np.int32) * 4  # 0..1020
    expected = {"wide-int.tiff": (Image.fromarray(wide, mode="I"), wide / 1020 * 255),
                "wide-float.tiff": (Image.fromarray(wide.astype(np.float32)), wide / 1020 * 255),
                "dark16.tiff": (Image.fromarray(ramp.astype(np.uint16) * 100), ramp.astype(np.int64) * 100 / 65535 * 255),
                # 16 bits scaled by 65535: 51529 is 200.502 of 255 (by 65536 it would be 200.499)
                "rounding16.tiff": (Image.fromarray(np.array([[51529, 65535]], dtype=np.uint16)), np.array([[51529, 65535]]) / 65535 * 255),
                # below zero is black, whatever the brightest value
                "negative.tiff": (Image.fromarray(np.array([[-40.0, 0.0, 1.0, 510.0]], dtype=np.float32)), np.array([[0, 0, 0.5, 255]]))}
    for name, (image, values) in expected.items():
        image.save(tmp_path / name)
        grey = np.asarray(load_rgb(tmp_path / name))[..., 0].astype(int)
        assert np.array_equal(grey, np.rint(values)), (name, grey[0, -3:], values[0, -3:])  # rounded, not truncated
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.info["transparency"] = 1
    palette.save(tmp_path / "palette.png", transparency=1)
    assert np.asarray(load_rgb(tmp_path / "palette.png")).min() == 255  # transparent index shows white
    keyed_grey = Image.fromarray(np.array([[0, 90]], dtype=np.uint8))  # grey with a transparent value (tRNS)
    keyed_grey.save(tmp_path / "keyed-grey.png", transparency=0)
    assert np.asarray(load_rgb(tmp_path / "keyed-grey.png"))[0].tolist() == [[255, 255, 255], [90, 90, 90]]
    keyed_rgb = Image.new("RGB", (2, 1), (10, 200, 10))
    keyed_rgb.putpixel((1, 0), (1, 2, 3))
    keyed_rgb.save(tmp_path / "keyed-rgb.png", transparency=(10, 200, 10))
    assert np.asarray(load_rgb(tmp_path / "keyed-rgb.png"))[0].tolist() == [[255, 255, 255], [1, 2, 3]]
    half = Image.new("LA", (4, 4), (0, 128))  # black at half opacity over white: mid grey
    half.save(tmp_path / "half.png")
    assert abs(int(np.asarray(load_rgb(tmp_path / "half.png"))[0, 0, 0]) - 127) <= 1
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    assert np.asarray(load_rgb(rgba))[0, 0].tolist() == [255, 0, 0]
    # modes only a caller's own Pillow image has: palette + alpha, and premultiplied alpha
    palette_alpha = Image.new("PA", (2, 1))
    palette_alpha.putpalette([200, 30, 30] + [0] * 765)
    palette_alpha.putpixel((0, 0), (0, 255))
    palette_alpha.putpixel((1, 0), (0, 0))
    assert np.asarray(load_rgb(palette_alpha))[0].tolist() == [[200, 30, 30], [255, 255, 255]]
    premultiplied = Image.new("RGBa", (1, 1), (128, 0, 0, 128))  # red at half opacity: pink on white
    assert np.abs(np.asarray(load_rgb(premultiplied))[0, 0].astype(int) - [255, 127, 127]).max() <= 1
    premultiplied_grey = Image.new("La", (1, 1), (64, 128))  # grey 127 at half opacity: 191 on white
    assert np.abs(np.asarray(load_rgb(premultiplied_grey))[0, 0].astype(int) - 191).max() <= 1


def test_only_jpegs_are_decoded_at_reduced_scale(tmp_path: Path) -> None:
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8))
    big.save(tmp_path / "big.jpg", quality=90)
    big.save(tmp_path / "big.png")
    drafted = load_rgb(tmp_path / "big.jpg", min_side=224)
    assert drafted.size == (500, 375)  # 1/4 scale: 1/8 would make the short side 187 < 224
    assert load_rgb(tmp_path / "big.jpg").size == (2000, 1500)  # no min_side: full size
    assert load_rgb(tmp_path / "big.png", min_side=224).size == (2000, 1500)  # PNG has no draft mode
    grey = Image.fromarray(np.full((1500, 2000), 90, dtype=np.uint8))
    grey.save(tmp_path / "grey.jpg")
    small_grey = load_rgb(tmp_path / "grey.jpg", min_side=224)
    assert small_grey.size == (500, 375) and small_grey.mode == "RGB"
    Image.new("CMYK", (2000, 1500), (0, 255, 255, 0)).save(tmp_path / "print.jpg")  # a print shop's CMYK JPEG
    small_print = load_rgb(tmp_path / "print.jpg", min_side=224)
    assert small_print.size == (500, 375) and small_print.getpixel((10, 10)) == (255, 0, 0)  # CMYK red is red


# Camera RAW files (LibRaw through rawpy), decoded from DNG files laid out as cameras write them
# (conftest.write_dng); indexing, searching and serving them is in tests/test_raw.py.

@contextlib.contextmanager
def _time_zone(name: str) -> Iterator[None]:
    """The process's local time zone (TZ) for a while; LibRaw and Python both read it."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def _grey(image: Image.Image | np.ndarray) -> np.ndarray:
    """A small grey copy, to compare a developed picture (other colours) with its source by shape."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    return np.asarray(picture.convert("L").resize((32, 32)), dtype=np.float64).flatten()


def _likeness(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    return float(np.corrcoef(_grey(a), _grey(b))[0, 1])


def test_a_raw_with_a_jpeg_preview_gives_the_preview_and_the_sensor_size(tmp_path: Path, photos: dict[str, Path]) -> None:
    """Most cameras store a full-size JPEG of what they showed: it is the picture (50-100x faster than
    developing the sensor data), decoded like any JPEG (drafted, bounded), with the RAW's own size."""
    pytest.importorskip("rawpy")
    path = tmp_path / "IMG_0001.DNG"
    rgb = write_dng(path, photos["chelsea"], preview="jpeg", taken="2021:05:04 10:20:30")
    data = path.read_bytes()
    image, metadata = decode_photo(data, raw=True)
    assert image.size == (320, 212)  # the preview: developing would give 160 x 106
    assert np.abs(np.asarray(image, dtype=np.float64) - rgb).mean() < 3  # its pixels (a JPEG at quality 95)
    assert (metadata.width, metadata.height, metadata.camera) == (320, 212, "Canon EOS R5")
    assert metadata.taken == datetime(2021, 5, 4, 10, 20, 30, tzinfo=timezone.utc).timestamp()
    assert (metadata.phash, metadata.phash_mirror) == perceptual_hashes(image)
    assert decode_photo(data, raw=True, min_side=100)[0].size == (160, 106)  # drafted at 1/2: both sides stay >= 100
    assert decode_photo(io.BytesIO(data), raw=True)[0].size == (320, 212)  # a stream (an upload) as well as bytes
    assert decode_photo(data, raw=True, describe=False)[1] == PhotoMetadata()  # a query or thumbnail reads no header
    assert decode_photo(data, raw=True, max_pixels=320 * 212)[0].size == (320, 212)
    with pytest.raises(ImageDecodeError, match=r"^decompression bomb: 320x212 pixels exceeds the limit of 67839$"):
        decode_photo(data, raw=True, max_pixels=320 * 212 - 1)
    write_dng(path, photos["chelsea"], preview="jpeg")  # a file with no date: LibRaw's preview says 1970, which is not kept
    assert decode_photo(path)[1].taken is None


def test_a_raw_with_a_bitmap_preview_gives_the_preview(tmp_path: Path, photos: dict[str, Path]) -> None:
    pytest.importorskip("rawpy")
    path = tmp_path / "IMG_0002.DNG"
    rgb = write_dng(path, photos["coffee"], preview="bitmap", taken="2020:01:02 03:04:05")
    data = path.read_bytes()
    image, metadata = decode_photo(data, raw=True)
    assert np.array_equal(np.asarray(image), rgb)  # the preview's pixels, exactly
    assert (metadata.width, metadata.height) == (320, 212)
    assert metadata.taken == datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()
    with _time_zone("Asia/Tokyo"):  # the camera's wall clock, whatever zone the indexing machine is in
        assert decode_photo(data, raw=True)[1].taken == metadata.taken
    assert (metadata.phash, metadata.phash_mirror) == perceptual_hashes(image)
    assert decode_photo(data, raw=True, describe=False)[1] == PhotoMetadata()
    assert decode_photo(data, raw=True, max_pixels=320 * 212)[0].size == (320, 212)
    with pytest.raises(ImageDecodeError, match=r"^decompression bomb: 320x212 pixels exceeds the limit of 67839$"):
        decode_photo(data, raw=True, max_pixels=320 * 212 - 1)  # the sensor's size, before anything is decoded


def test_a_raw_without_a_preview_is_developed_at_half_size_in_the_cameras_white_balance(
        tmp_path: Path, photos: dict[str, Path]) -> None:
    pytest.importorskip("rawpy")
    path = tmp_path / "IMG_0003.DNG"
    rgb = write_dng(path, photos["chelsea"])
    image, metadata = decode_photo(path.read_bytes(), raw=True)
    assert image.mode == "RGB" and image.size == (160, 106)  # half size: a quarter of the work, still more than a model needs
    assert _likeness(image, rgb) > 0.9  # the photograph, not a flat or scrambled decode
    assert (metadata.width, metadata.height, metadata.taken) == (320, 212, None)
    assert (metadata.phash, metadata.phash_mirror) == perceptual_hashes(image)
    assert decode_photo(path)[0].size == image.size  # a path says RAW by its name
    assert load_rgb(path.read_bytes(), raw=True).size == image.size  # bytes, only by the flag (the image route's way)
    assert photo_metadata(path) == metadata  # rows indexed before metadata was kept get the same reading
    assert decode_photo(path.read_bytes(), raw=True, describe=False)[1] == PhotoMetadata()
    with pytest.raises(ImageDecodeError, match=r"^decompression bomb: 320x212 pixels exceeds the limit of 67839$"):
        decode_photo(path, max_pixels=320 * 212 - 1)
    assert decode_photo(path, max_pixels=320 * 212)[0].size == (160, 106)
    # a sensor that records red at half strength, as the camera's white balance (AsShotNeutral) says:
    # developed with that balance, the colours are the same photo's (without it, red falls from ~248 to ~68)
    colours = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    write_dng(path, photos["chelsea"], red_sensitivity=0.5, taken="2019:07:08 09:10:11")
    weak_red, metadata = decode_photo(path)
    assert np.abs(np.asarray(weak_red, dtype=np.float64).reshape(-1, 3).mean(axis=0) - colours).max() < 25
    assert metadata.taken == datetime(2019, 7, 8, 9, 10, 11, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_turned_raw_is_shown_upright_with_its_displayed_size(tmp_path: Path, photos: dict[str, Path], orientation: int) -> None:
    """The camera held sideways (Orientation 6 or 8) or upside down (3): whichever way the picture is
    decoded, it comes out the way the camera showed it, and its size is the displayed one."""
    pytest.importorskip("rawpy")
    source = Image.open(photos["astronaut"]).convert("RGB").resize((320, 212))  # not symmetric under any turn
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    source.save(buffer, format="JPEG", exif=exif, quality=95)
    upright = ImageOps.exif_transpose(Image.open(buffer))  # the same orientation as a JPEG shows it, by Pillow
    source.save(tmp_path / "source.png")
    displayed = (212, 320) if orientation in (6, 8) else (320, 212)
    for preview in (None, "jpeg", "bitmap"):
        path = tmp_path / f"turned-{preview}.dng"
        write_dng(path, tmp_path / "source.png", orientation=orientation, preview=preview)
        image, metadata = decode_photo(path)
        assert (metadata.width, metadata.height) == displayed, preview
        assert image.size[0] < image.size[1] if orientation in (6, 8) else image.size[0] > image.size[1], preview
        assert _likeness(image, upright) > 0.9, (preview, _likeness(image, upright))


def test_bad_raw_files_give_reasons(tmp_path: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The reason a person reads, exactly."""
    import struct

    import tifffile

    pytest.importorskip("rawpy")
    write_dng(tmp_path / "good.dng", photos["coffee"])
    data = (tmp_path / "good.dng").read_bytes()
    cases = ((b"", r"^empty file \(0 bytes\)$"), (b"not a raw file at all" * 10, r"^not a RAW format LibRaw reads$"),
             (data[: len(data) // 3], r"^truncated RAW file: its data ends before the image does$"))  # a copy cut short
    for content, reason in cases:
        with pytest.raises(ImageDecodeError, match=reason):
            decode_photo(content, raw=True)
    # a header that claims 60000 x 60000 pixels: refused before anything is developed, and past our limit, by LibRaw
    with tifffile.TiffFile(tmp_path / "good.dng") as tif:
        offsets = [tif.pages.first.tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
    huge = bytearray(data)
    for offset in offsets:
        struct.pack_into("<I", huge, offset, 60000)
    with pytest.raises(ImageDecodeError, match=r"^decompression bomb: 60000x60000 pixels exceeds the limit of 178956970$"):
        decode_photo(bytes(huge), raw=True)
    with pytest.raises(ImageDecodeError, match=r"^corrupt RAW file: LibRawTooBigError: Image too big for processing$"):
        decode_photo(bytes(huge), raw=True, max_pixels=10**12)
    monkeypatch.setattr(decode, "rawpy", None)  # the `raw` extra not installed
    with pytest.raises(ImageDecodeError, match=r"^a camera RAW file, and rawpy is not installed \(pip install 'photoseek\[raw\]'\)$"):
        decode_photo(data, raw=True)
