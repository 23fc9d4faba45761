"""Finding files: default exclusions (as rclip's) and --exclude globs, without Milvus or a model."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from imsearch.indexing.scan import EXCLUDED_FOLDERS, scan_directory


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


def test_links_loops_roots_and_odd_entries_in_process(tmp_path: Path) -> None:
    """What a scan reports, called directly (the CLI and server tests see the same through child processes)."""
    from imsearch.indexing.scan import OUTSIDE, entries_for_paths, scan_directory

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
    assert not rooted.unlisted_dirs

    whole = scan_directory(elsewhere, within=[str(library)])  # a root outside the roots: refused whole
    assert not whole.files and [(f.path, f.reason) for f in whole.failed] == [(str(elsewhere), OUTSIDE)]

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
    from imsearch.indexing.scan import pseudo_filesystem_devices, scan_directory

    devices = pseudo_filesystem_devices()
    assert os.stat("/proc").st_dev in devices and os.stat("/sys").st_dev in devices
    refused = scan_directory("/proc")
    assert not refused.files
    assert [f.reason for f in refused.failed] == ["a system pseudo filesystem (such as /proc, /sys or /dev), not photos"]
