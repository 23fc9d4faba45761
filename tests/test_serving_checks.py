"""What the HTTP layer checks before it answers, on their own and in process (the fast tier, and the
mutation run): which indexed file may be served, and how a request's filter becomes a store filter.

The same checks are exercised through a real server in test_security.py and test_http_api.py; these
tests separate each condition a check combines (size but not mtime, a sibling folder sharing a prefix,
content changed with size and mtime kept), so a check that drops one of them fails here.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from milvus_store import Near, SearchFilter
from photoseek.errors import InvalidArgumentError
from photoseek.indexing import files
from photoseek.indexing.files import FileNotServed, read_indexed_file, unchanged_on_disk, under
from photoseek.photo_metadata import parse_when
from photoseek.servers.request_filters import make_filter, query_filter
from photoseek.store.filters import quote

CONTENT = b"\x89PNG pretend pixels " * 50


def record_of(path: Path, fingerprint: bool = True) -> dict[str, Any]:
    """A row as the indexer writes it: path, size, mtime and the blake2b fingerprint of the content."""
    info = path.stat()
    digest = hashlib.blake2b(path.read_bytes(), digest_size=32).hexdigest() if fingerprint else ""
    return {"path": str(path), "size": info.st_size, "mtime": info.st_mtime, "fingerprint": digest}


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "library" / "photo.png"
    path.parent.mkdir()
    path.write_bytes(CONTENT)
    return path


def refusal(record: dict[str, Any], roots: tuple[str, ...] = ()) -> tuple[int, str]:
    with pytest.raises(FileNotServed) as refused:
        read_indexed_file(record, roots)
    return refused.value.status, str(refused.value)


def test_the_indexed_bytes_are_served_with_and_without_roots(photo: Path) -> None:
    record = record_of(photo)
    assert read_indexed_file(record) == CONTENT
    assert read_indexed_file(record, (str(photo.parent),)) == CONTENT
    assert read_indexed_file(record, ("/elsewhere", str(photo.parent.parent))) == CONTENT  # any root will do
    assert read_indexed_file(record_of(photo, fingerprint=False)) == CONTENT  # a row from before fingerprints


CHANGED = (409, "the file changed since it was indexed; re-index its folder")
GONE = (404, "the indexed file is gone or no longer a plain file on its indexed path; re-index its folder")


def test_a_changed_mtime_alone_is_refused(photo: Path) -> None:
    record = record_of(photo)
    os.utime(photo, (record["mtime"] + 5, record["mtime"] + 5))
    assert refusal(record) == CHANGED
    assert not unchanged_on_disk(record)
    os.utime(photo, (record["mtime"] + 1e-3, record["mtime"] + 1e-3))  # a millisecond is a change too
    assert refusal(record) == CHANGED and not unchanged_on_disk(record)


def test_a_changed_size_alone_is_refused(photo: Path) -> None:
    record = record_of(photo)
    photo.write_bytes(CONTENT + b"!")
    os.utime(photo, (record["mtime"], record["mtime"]))
    assert refusal(record) == CHANGED
    assert not unchanged_on_disk(record)


def test_new_content_with_the_same_size_and_mtime_is_refused_by_its_fingerprint(photo: Path) -> None:
    record = record_of(photo)
    photo.write_bytes(CONTENT.replace(b"pixels", b"secret"))
    os.utime(photo, (record["mtime"], record["mtime"]))
    assert unchanged_on_disk(record)  # the cheap check cannot tell...
    assert refusal(record) == (409, "the file's content is not what was indexed; re-index its folder")  # ...this one can


def test_a_fingerprint_that_is_not_ours_counts_as_none(photo: Path) -> None:
    for odd in ("abc", "a", "f" * 130):
        assert read_indexed_file({**record_of(photo), "fingerprint": odd}) == CONTENT
    for digest_size in (1, 16, 64):  # the digest size follows the stored length, from 2 to 128 hex digits
        fitting = hashlib.blake2b(CONTENT, digest_size=digest_size).hexdigest()
        assert read_indexed_file({**record_of(photo), "fingerprint": fitting}) == CONTENT
        wrong = ("0" if fitting[0] != "0" else "1") + fitting[1:]
        assert refusal({**record_of(photo), "fingerprint": wrong}) == (409, "the file's content is not what was indexed; re-index its folder")


def test_a_file_swapped_for_a_symlink_with_the_same_size_and_mtime_is_refused(photo: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.key"
    secret.write_bytes(CONTENT.replace(b"pixels", b"key!!!"))  # same size
    record = record_of(photo)
    photo.unlink()
    photo.symlink_to(secret)
    os.utime(secret, (record["mtime"], record["mtime"]))
    assert unchanged_on_disk(record)  # stat follows the link: sizes and times agree
    assert refusal(record)[0] == 409  # the fingerprint refuses the key's bytes
    assert refusal({**record, "fingerprint": ""}) == (409, "the indexed path now goes through a symbolic link; re-index its folder")
    assert refusal(record, (str(photo.parent),))[0] == 404  # and the real path is outside the served folder


def test_roots_are_real_paths_and_a_sibling_sharing_a_prefix_is_outside(photo: Path, tmp_path: Path) -> None:
    record = record_of(photo)
    library = str(photo.parent)
    assert refusal(record, (library + "2",)) == (404, "the indexed file is not under the folders this server serves")
    assert refusal(record, (str(tmp_path / "lib"),))[0] == 404
    assert under(library + "/photo.png", (library,)) and under(library, (library,)) and under(library, (library + "/",))
    assert under(library + "/photo.png", (library + "/",)) and under(library + "/photo.png", ("/",))
    assert not under(library + "2/photo.png", (library,)) and not under("/", (library,))
    inside = tmp_path / "library" / "link-inside.png"
    inside.symlink_to(photo)  # a link to a file inside the roots: served by its real path
    assert read_indexed_file({**record_of(photo), "path": str(inside)}, (library,)) == CONTENT


def test_what_is_not_a_plain_file_on_its_path_is_gone(photo: Path, tmp_path: Path) -> None:
    record = record_of(photo)
    photo.unlink()
    assert refusal(record) == GONE and not unchanged_on_disk(record)
    photo.mkdir()  # a folder where the file was: opened as a file it is refused...
    assert refusal(record) == (404, "the indexed path is no longer a plain file; re-index its folder")
    assert not unchanged_on_disk(record)
    photo.rmdir()
    os.mkfifo(photo)  # ...and so is a named pipe, at once: opening it for reading would wait for a writer
    outcome: list[tuple[int, str]] = []
    reader = threading.Thread(target=lambda: outcome.append(refusal(record)), daemon=True)
    reader.start()
    reader.join(timeout=5)
    assert outcome == [(404, "the indexed path is no longer a plain file; re-index its folder")], "blocked on a named pipe"
    assert not unchanged_on_disk({**record, "size": 0, "mtime": photo.stat().st_mtime})
    assert refusal({**record, "path": "relative/photo.png"}) == GONE  # resolved from the server's folder: not there
    from photoseek.indexing.files import open_without_symlinks

    with pytest.raises(FileNotServed) as refused:
        open_without_symlinks("relative/photo.png")
    assert (refused.value.status, str(refused.value)) == (404, "the indexed path is not absolute")


def test_a_file_larger_than_the_bound_is_not_read(photo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_SERVED_BYTES", 3 * 1024 * 1024)
    photo.write_bytes(b"x" * (3 * 1024 * 1024 + 1))
    assert refusal(record_of(photo)) == (409, "the file is larger than 3 MB")
    photo.write_bytes(CONTENT)
    monkeypatch.setattr(files, "MAX_SERVED_BYTES", len(CONTENT) - 1)
    assert refusal(record_of(photo))[0] == 409
    monkeypatch.setattr(files, "MAX_SERVED_BYTES", len(CONTENT))
    assert read_indexed_file(record_of(photo)) == CONTENT


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(photo: Path, tmp_path: Path) -> None:
    from photoseek.indexing.files import open_without_symlinks

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "photo.png").write_bytes(CONTENT)
    moved = tmp_path / "moved"
    photo.parent.rename(moved)
    photo.parent.symlink_to(elsewhere)
    with pytest.raises(FileNotServed) as refused:
        open_without_symlinks(str(photo))
    assert (refused.value.status, str(refused.value)) == GONE


# ------------------------------------------------------------------------------ request filters


def test_a_request_filter_becomes_a_store_filter() -> None:
    assert make_filter(None, None, None, None) is None
    assert make_filter("  ", [], None, None) is None
    built = make_filter("/photos/trip", ["JPG,.png", " heic "], "2024-05-01", "1714600000")
    assert built == SearchFilter("/photos/trip/", ("jpg", "png", "heic"), datetime.fromisoformat("2024-05-01").timestamp(), 1714600000.0)
    assert make_filter("/photos/trip/", "jpg", None, None) == SearchFilter("/photos/trip/", ("jpg",))
    assert make_filter(None, None, "2024-05-01T12:30", None) == SearchFilter(None, (), datetime(2024, 5, 1, 12, 30).timestamp())
    assert make_filter("/photos//", None, None, "") == SearchFilter("/photos/")  # an empty time is no filter
    assert make_filter("/photos/BOX", ["abcdefghij"], None, None) == SearchFilter("/photos/BOX/", ("abcdefghij",))
    assert make_filter(None, None, "-1e11", "1e11") == SearchFilter(None, (), -1e11, 1e11)  # the bounds themselves pass


def test_every_field_of_a_get_request_reaches_the_store_filter() -> None:
    """query_filter is the dependency of every GET search route: each field must land in its own place."""
    built = query_filter(folder="/photos", ext=["jpg", "PNG"], modified_after="10", modified_before="20",
                         taken_after="2019-06-01", taken_before="2019-06-30", camera=" iPhone ", near="35,135,10",
                         min_width=800)
    assert built == SearchFilter("/photos/", ("jpg", "png"), 10.0, 20.0, taken_after=parse_when("2019-06-01"),
                                 taken_before=parse_when("2019-06-30", end_of_day=True), camera="iPhone",
                                 near=Near(35.0, 135.0, 10.0), min_width=800)
    assert query_filter(folder=None, ext=None, modified_after=None, modified_before=None, taken_after=None, taken_before=None,
                        camera="canon", near=None, min_width=None) == SearchFilter(camera="canon")
    assert query_filter(folder=None, ext=None, modified_after=None, modified_before=None, taken_after=None, taken_before=None,
                        camera=None, near=None, min_width=None) is None


@pytest.mark.parametrize(("folder", "ext", "after", "says"), [
    ("photos/trip", None, None, "folder must be an absolute path"),
    (None, ["jpg;rm"], None, "ext must be file types"),
    (None, ["abcdefghijk"], None, "ext must be file types"),
    (None, None, "yesterday", "modified_after must be an ISO date/time"),
    (None, None, "nan", "modified_after"),
    (None, None, "inf", "modified_after"),
    (None, None, "100000000001", "modified_after must be a finite date"),
    (None, None, "-100000000001", "modified_after must be a finite date"),
    (None, ["jpg", ""], "2024-13-01", "modified_after must be an ISO date/time"),
])
def test_a_bad_request_filter_is_named(folder: str | None, ext: list[str] | None, after: str | None, says: str) -> None:
    with pytest.raises(InvalidArgumentError, match=says):
        make_filter(folder, ext, after, None)
    with pytest.raises(InvalidArgumentError, match=says.replace("modified_after", "modified_before")):
        make_filter(folder, ext, None, after) if after else make_filter(folder, ext, None, None)


def test_a_store_filter_is_one_literal_expression() -> None:
    assert SearchFilter().expression() == ""
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    expression = SearchFilter('/x/" or path != "', ("JPG", ".png"), 10.0, 20.5).expression()
    assert expression == ('(path >= "/x/\\" or path != \\"" and path < "/x/\\" or path != \\"\U0010ffff") and ext in ["jpg", "png"] '
                          'and mtime >= 10.0 and mtime < 20.5')


def test_thumbnails_of_a_server_index_go_to_the_user_cache_not_a_folder_named_after_the_uri(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from photoseek.paths import thumbnail_dir

    monkeypatch.setenv("PHOTOSEEK_CACHE", str(tmp_path / "cache"))
    assert thumbnail_dir(str(tmp_path / "photos.db")) == tmp_path / "thumbnails"
    one, other = thumbnail_dir("http://localhost:19530"), thumbnail_dir("http://db.lan:19530")
    assert one.parent == tmp_path / "cache" / "thumbnails"
    assert one != other and "/" not in one.name and ":" not in one.name
