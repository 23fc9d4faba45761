"""Finding files: default exclusions (as rclip's) and --exclude globs, without Milvus or a model."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from milvus_store import IndexedFile, path_id
from photoseek.indexing.pipeline import DescriptionMap, IndexSummary, fingerprint, gone_files, plan_work
from photoseek.indexing.scan import EXCLUDED_FOLDERS, FailedFile, FileEntry, ScanResult, scan_directory


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


def test_system_cache_and_recycle_folders_are_left_out(tmp_path: Path) -> None:
    _image(tmp_path / "trip" / "beach.png")
    for folder in sorted(EXCLUDED_FOLDERS) + [".git", ".thumbnails"]:
        _image(tmp_path / "trip" / folder / "copy.png")
    _image(tmp_path / "trip" / "node_modules_backup" / "kept.png")  # only the exact names are system folders
    found = sorted(Path(f.path).relative_to(tmp_path).as_posix() for f in scan_directory(tmp_path).files)
    assert found == ["trip/beach.png", "trip/node_modules_backup/kept.png"]


def test_exclude_globs_match_names_and_relative_paths(tmp_path: Path) -> None:
    for name in ["2019/kyoto/temple.png", "2019/kyoto/temple.tmp.png", "exports/web/temple.png", "Screenshots/shot.png",
                 "2020/exports/keep.png"]:
        _image(tmp_path / name)
    found = sorted(Path(f.path).relative_to(tmp_path).as_posix()
                   for f in scan_directory(tmp_path, exclude=["*.tmp.png", "exports/*", "Screenshots"]).files)
    # "exports/*" is a path below the indexed folder: 2020/exports stays; "Screenshots" is a name anywhere
    assert found == ["2019/kyoto/temple.png", "2020/exports/keep.png"]
    by_name = sorted(Path(f.path).name for f in scan_directory(tmp_path, exclude=["exports"]).files)
    assert by_name == ["shot.png", "temple.png", "temple.tmp.png"]



def test_one_folder_at_a_time_lists_its_own_files_and_the_subfolders_to_enter(tmp_path: Path) -> None:
    # how a cluster lists a tree in parts: each part is one folder, its excludes relative to the indexed root
    for name in ["top.png", "b/two.png", "a/one.png", "a/private/secret.png", ".hidden/x.png", "@eaDir/thumb.png"]:
        _image(tmp_path / name)
    top = scan_directory(tmp_path, recursive=False)
    assert [Path(f.path).name for f in top.files] == ["top.png"]
    assert top.subfolders == [str(tmp_path / "a"), str(tmp_path / "b")]
    part = scan_directory(tmp_path / "a", recursive=False, exclude=["a/private"], relative_to=tmp_path)
    assert [Path(f.path).name for f in part.files] == ["one.png"] and part.subfolders == []
    # the same pattern relative to the part itself names nothing there
    assert scan_directory(tmp_path / "a", recursive=False, exclude=["a/private"]).subfolders == [str(tmp_path / "a" / "private")]


def test_a_raw_file_beside_its_jpeg_is_left_out_whatever_the_case_of_either_name(tmp_path: Path) -> None:
    # the camera wrote both of one shot (as rclip decides); a RAW alone is kept, RAWs are never read here
    for name in ["IMG_1.JPG", "IMG_1.CR2", "IMG_2.cr2", "holiday.jpg", "HOLIDAY.NEF", "scan.dng", "scan.png.dng"]:
        (tmp_path / name).write_bytes(b"raw or not, scanning reads no bytes")
    extensions = {".jpg", ".png", ".cr2", ".nef", ".dng"}
    found = sorted(Path(f.path).name for f in scan_directory(tmp_path, extensions=extensions).files)
    assert found == ["IMG_1.JPG", "IMG_2.cr2", "holiday.jpg", "scan.dng", "scan.png.dng"]

def test_links_loops_roots_and_odd_entries_in_process(tmp_path: Path) -> None:
    """What a scan reports, called directly (the CLI and server tests see the same through child processes)."""
    from photoseek.indexing.scan import OUTSIDE, entries_for_paths, scan_directory

    library, elsewhere = tmp_path / "library", tmp_path / "elsewhere"
    _image(library / "a" / "one.png")
    _image(library / "b" / "two.JPG")  # extensions compare case-blind
    _image(elsewhere / "secret.png")
    (library / "notes.txt").write_text("not a photo")
    (library / "a" / "loop").symlink_to(library, target_is_directory=True)  # a loop back to the top
    (library / "b" / "twice").symlink_to(library / "a", target_is_directory=True)  # a second way into a/
    (library / "out").symlink_to(elsewhere, target_is_directory=True)
    (library / "leak.png").symlink_to(elsewhere / "secret.png")
    (library / "dangling.png").symlink_to(tmp_path / "nothing.png")

    free = scan_directory(library)
    found = sorted(Path(f.path).relative_to(library).as_posix() for f in free.files)
    # each real folder once (no loop, no second visit), links to outside followed when no roots are set
    assert found == ["a/one.png", "b/two.JPG", "leak.png", "out/secret.png"]
    assert [(Path(f.path).name, f.reason) for f in free.failed] == [("dangling.png", "broken symbolic link")]
    entry = next(f for f in free.files if f.path.endswith("one.png"))
    assert entry.size == (library / "a" / "one.png").stat().st_size
    assert abs(entry.mtime - (library / "a" / "one.png").stat().st_mtime) < 1e-6

    rooted = scan_directory(library, within=[str(library)])
    assert sorted(Path(f.path).relative_to(library).as_posix() for f in rooted.files) == ["a/one.png", "b/two.JPG"]
    outside = sorted((Path(f.path).name, f.reason) for f in rooted.failed if f.reason == OUTSIDE)
    assert outside == [("dangling.png", OUTSIDE), ("leak.png", OUTSIDE), ("out", OUTSIDE)]  # links whose target is outside
    assert rooted.unlisted_dirs == [str(library / "out")]  # not read, so not known to be empty: rows under it stay

    whole = scan_directory(elsewhere, within=[str(library)])  # a root outside the roots: refused whole
    assert not whole.files and [(f.path, f.reason) for f in whole.failed] == [(str(elsewhere), OUTSIDE)]
    assert whole.unlisted_dirs == [str(elsewhere)]

    missing = scan_directory(tmp_path / "gone")
    assert not missing.files and missing.unlisted_dirs == [str(tmp_path / "gone")]
    assert missing.failed[0].reason.startswith("cannot open folder:")

    explicit = entries_for_paths([library / "a" / "one.png", tmp_path / "none.png", library / "a", "/dev/null"])
    one = library / "a" / "one.png"
    assert [(f.path, f.size, f.mtime) for f in explicit.files] == [(str(one), one.stat().st_size, one.stat().st_mtime)]
    assert [(f.path, f.reason) for f in explicit.failed] == [
        (str(tmp_path / "none.png"), "file not found"), (str(library / "a"), "is a folder (use index_directory for folders)"),
        ("/dev/null", "not a regular file")]
    assert [(f.path, f.reason[:19]) for f in missing.failed] == [(str(tmp_path / "gone"), "cannot open folder:")]


def test_pseudo_filesystems_are_refused_in_process() -> None:
    from photoseek.indexing.scan import pseudo_filesystem_devices, scan_directory

    devices = pseudo_filesystem_devices()
    assert os.stat("/proc").st_dev in devices and os.stat("/sys").st_dev in devices
    refused = scan_directory("/proc")
    assert not refused.files
    assert [f.reason for f in refused.failed] == ["a system pseudo filesystem (such as /proc, /sys or /dev), not photos"]


def test_dev_and_devpts_are_refused_too() -> None:
    """Not only /proc and /sys: every pseudo filesystem in the mount table (devtmpfs, devpts...)."""
    from photoseek.indexing.scan import pseudo_filesystem_devices

    devices = pseudo_filesystem_devices()
    for path in ("/dev", "/dev/pts"):
        if os.path.isdir(path):
            assert os.stat(path).st_dev in devices, path
            assert [(f.path, f.reason) for f in scan_directory(path).failed] == \
                [(path, "a system pseudo filesystem (such as /proc, /sys or /dev), not photos")]


def test_what_is_skipped_first_does_not_end_the_scan(tmp_path: Path) -> None:
    """Hidden entries, a link into /proc and (with roots) a link out of them come first in name order
    here; each is passed over and everything after it is still found."""
    _image(tmp_path / ".hidden.png")
    (tmp_path / ".config").mkdir()
    (tmp_path / "a_proc").symlink_to("/proc")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir(exist_ok=True)
    _image(outside / "secret.png")
    (tmp_path / "a_out").symlink_to(outside)
    _image(tmp_path / "b_real" / "photo.png")
    _image(tmp_path / "z.png")
    assert sorted(Path(f.path).name for f in scan_directory(tmp_path).files) == ["photo.png", "secret.png", "z.png"]
    confined = scan_directory(tmp_path, within=[str(tmp_path)])
    assert sorted(Path(f.path).name for f in confined.files) == ["photo.png", "z.png"]
    assert sorted(Path(f.path).name for f in confined.failed) == ["a_out", "a_proc"]  # both lead outside the root
    excluded = scan_directory(tmp_path, exclude=["a_*"])  # excluded names come first too
    assert sorted(Path(f.path).name for f in excluded.files) == ["photo.png", "z.png"] and not excluded.failed


def test_folders_and_files_the_system_refuses_are_reported_and_the_scan_goes_on(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What permission bits do to an unprivileged user (tests/test_cli.py runs that for real as nobody),
    here in process with the refusals injected, so that each branch is seen on its own: a folder that
    cannot be opened, one that cannot be listed, a file that cannot be stat'ed. Each is reported with
    its reason, the folders are kept as unlisted (their rows must never be removed), and the scan
    goes on with everything else."""
    from photoseek.indexing import scan as scan_module

    for name in ("a_unopenable", "b_unlistable", "c_fine", "d_fine"):
        (tmp_path / name).mkdir()
        _image(tmp_path / name / "photo.png")
    _image(tmp_path / "e_unstatable.png")
    _image(tmp_path / "f_last.png")
    real_stat, real_scandir = os.stat, os.scandir

    def stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith("a_unopenable"):
            raise PermissionError(13, "Permission denied")
        return real_stat(path, *args, **kwargs)

    def scandir(path):  # type: ignore[no-untyped-def]
        if str(path).endswith("b_unlistable"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(scan_module.os, "stat", stat)
    monkeypatch.setattr(scan_module.os, "scandir", scandir)
    result = scan_directory(tmp_path)
    assert sorted(Path(f.path).relative_to(tmp_path).as_posix() for f in result.files) == \
        ["c_fine/photo.png", "d_fine/photo.png", "e_unstatable.png", "f_last.png"]
    assert [(Path(f.path).name, f.reason) for f in result.failed] == [
        ("a_unopenable", "cannot open folder: Permission denied"), ("b_unlistable", "cannot list folder: Permission denied")]
    assert sorted(Path(p).name for p in result.unlisted_dirs) == ["a_unopenable", "b_unlistable"]

    monkeypatch.undo()
    explicit = scan_module.entries_for_paths([tmp_path / "f_last.png", tmp_path / "gone.png", tmp_path / "c_fine"])
    def stat_refusing_one_file(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith("e_unstatable.png"):
            raise PermissionError(13, "Permission denied")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(scan_module.os, "stat", stat_refusing_one_file)
    refused = scan_module.entries_for_paths([tmp_path / "e_unstatable.png", tmp_path / "f_last.png"])
    assert [(Path(f.path).name, f.reason) for f in refused.failed] == [("e_unstatable.png", "cannot stat: Permission denied")]
    assert [Path(f.path).name for f in refused.files] == ["f_last.png"]
    assert [Path(f.path).name for f in explicit.files] == ["f_last.png"]
    assert [(Path(f.path).name, f.reason) for f in explicit.failed] == [
        ("gone.png", "file not found"), ("c_fine", "is a folder (use index_directory for folders)")]


def test_a_summary_adds_up_and_reads_the_same_in_json() -> None:
    """to_dict is what --json prints and what the HTTP API's index jobs answer: names and rounding are an interface."""
    first = IndexSummary(indexed=3, unchanged=2, removed=1, moved=1, descriptions_updated=4, metadata_read=5,
                         failed=[FailedFile("/p/a.jpg", "empty file")], seconds=1.23456,
                         stage_seconds={"read": 0.5, "decode": 0.12345})
    first.add(IndexSummary(indexed=1, unchanged=10, removed=2, moved=3, descriptions_updated=1, metadata_read=1,
                           failed=[FailedFile("/q/b.png", "truncated")], seconds=2.0, stage_seconds={"decode": 1.0, "encode": 0.25}))
    assert first.to_dict() == {
        "indexed": 4, "unchanged": 12, "removed": 3, "moved": 4, "descriptions_updated": 5, "metadata_read": 6,
        "failed": [{"path": "/p/a.jpg", "reason": "empty file"}, {"path": "/q/b.png", "reason": "truncated"}],
        "seconds": 3.235, "stage_seconds": {"read": 0.5, "decode": 1.123, "encode": 0.25}}


# ------------------------------------------------------------------------------ what a run decides to do


def _known(path: str, size: int = 100, mtime: float = 50.0, description: str = "", needs_metadata: bool = False) -> IndexedFile:
    return IndexedFile(id=path_id(path), path=path, size=size, mtime=mtime, fingerprint="f" * 32, description=description,
                       needs_metadata=needs_metadata)


def test_a_file_is_unchanged_only_when_size_and_mtime_both_match() -> None:
    existing = {p: _known(p) for p in ("/a/same.jpg", "/a/touched.jpg", "/a/grown.jpg", "/a/close.jpg", "/a/old.jpg",
                                       "/a/labelled.jpg", "/a/gone.jpg")}
    existing["/a/old.jpg"] = _known("/a/old.jpg", needs_metadata=True, description="kept")
    existing["/a/labelled.jpg"] = _known("/a/labelled.jpg", description="before")
    scan = ScanResult(files=[FileEntry("/a/same.jpg", 100, 50.0), FileEntry("/a/touched.jpg", 100, 50.5),
                             FileEntry("/a/grown.jpg", 101, 50.0), FileEntry("/a/close.jpg", 100, 50.0 + 5e-7),
                             FileEntry("/a/old.jpg", 100, 50.0), FileEntry("/a/labelled.jpg", 100, 50.0),
                             FileEntry("/a/bad-\udce9.jpg", 1, 1.0),  # a refused file before others: they still count
                             FileEntry("/a/new.jpg", 7, 1.0), FileEntry("/a/" + "x" * 4093 + ".jpg", 1, 1.0),
                             FileEntry("/a/longest" + "x" * (4096 - 14) + ".jpg", 1, 1.0)])
    descriptions = DescriptionMap({"labelled.jpg": "after", "same.jpg": ""}, "/a")
    plan = plan_work(scan, existing, descriptions)
    assert [e.path for e in plan.to_encode] == ["/a/touched.jpg", "/a/grown.jpg", "/a/new.jpg", "/a/longest" + "x" * 4082 + ".jpg"]
    assert plan.unchanged == 4  # same, close (float noise in mtime), old, labelled
    assert plan.read_metadata == [(existing["/a/old.jpg"], "kept")]  # its own description kept
    assert plan.relabel == [(existing["/a/labelled.jpg"], "after")]
    assert [(f.path, f.reason) for f in plan.failed] == [("/a/bad-\udce9.jpg", "file name is not valid UTF-8"),
                                                        ("/a/" + "x" * 4093 + ".jpg", "path longer than 4096 bytes")]
    assert len(("/a/longest" + "x" * 4082 + ".jpg").encode()) == 4096  # the longest path kept
    relabelled_old = plan_work(ScanResult(files=[FileEntry("/a/old.jpg", 100, 50.0)]), existing,
                               DescriptionMap({"old.jpg": "new words"}, "/a"))
    assert relabelled_old.read_metadata == [(existing["/a/old.jpg"], "new words")] and relabelled_old.relabel == []


def test_rows_under_a_folder_that_could_not_be_listed_are_kept() -> None:
    existing = {p: _known(p) for p in ("/a/gone.jpg", "/a/locked/x.jpg", "/a/locked2/y.jpg", "/a/broken.jpg", "/a/here.jpg")}
    scan = ScanResult(files=[FileEntry("/a/here.jpg", 100, 50.0)], failed=[FailedFile("/a/broken.jpg", "unreadable")],
                      unlisted_dirs=["/a/locked/"])
    assert sorted(f.path for f in gone_files(scan, existing)) == ["/a/gone.jpg", "/a/locked2/y.jpg"]
    assert gone_files(ScanResult(files=[FileEntry(p, 1, 1.0) for p in existing]), existing) == []


def test_descriptions_are_found_by_the_most_specific_key() -> None:
    descriptions = DescriptionMap({"cat.jpg": "any cat", "sub/cat.jpg": "the sub cat", "/else/where/cat.jpg": "that cat",
                                   "/base/dog.jpg": "absolute dog", "dog.jpg": "any dog", "./sub/../bird.jpg": "bird",
                                   "both.jpg": {"en": "a cat", "zh": "一只猫", "fr": ""}, "count.jpg": 3}, "/base")
    assert descriptions.get("/base/cat.jpg") == "any cat"  # by name, relative to the base
    assert descriptions.get("/base/sub/cat.jpg") == "the sub cat"
    assert descriptions.get("/else/where/cat.jpg") == "that cat"
    assert descriptions.get("/other/cat.jpg") == "any cat"  # a name matches in any folder
    assert descriptions.get("/base/dog.jpg") == "absolute dog"  # an absolute path wins over its name
    assert descriptions.get("/base/bird.jpg") == "bird"  # normalised
    assert descriptions.get("/base/./sub/cat.jpg") == "the sub cat"
    assert descriptions.get("/base/both.jpg") == "a cat / 一只猫"  # languages joined, empty ones left out
    assert descriptions.get("/base/count.jpg") == "3"
    assert descriptions.get("/base/none.jpg") is None
    assert descriptions and not DescriptionMap(None, "/base") and not DescriptionMap({}, "/base")


def test_content_fingerprints_stay_what_earlier_versions_stored() -> None:
    # indexes keep them: a moved photo is recognised by its fingerprint on a later run, also one an older
    # version wrote, so the function may not change (a 16-byte BLAKE2b of the file's bytes)
    assert fingerprint(b"the bytes of a photo") == "b1ee2f88ed0a57bc8ba5ebd431972d7a"
    assert fingerprint(b"the bytes of a photo.") != fingerprint(b"the bytes of a photo")
