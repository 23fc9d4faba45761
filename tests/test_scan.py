"""Finding files: default exclusions (as rclip's) and --exclude globs, without Milvus or a model."""

from __future__ import annotations

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
