"""The parts of Ray mode that need no Ray (fast tier): cutting a tree into plan parts, the rows a plan
part emits, manifest paths, and the writer that applies pipeline rows to a store (Milvus Lite here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from milvus_store import ImageRecord, IndexedFile, MilvusStore, metadata_from_row, path_id
from photoseek.indexing import ray_index
from photoseek.indexing.pipeline import DescriptionMap
from photoseek.indexing.ray_index import (
    ENCODE,
    FAILED,
    GONE,
    READ_METADATA,
    RELABEL,
    UNCHANGED,
    FolderPart,
    _Rows,
    manifest_path,
    split_tree,
    write_rows,
)
from photoseek.indexing.scan import scan_directory
from photoseek.photo_metadata import PhotoMetadata


def make_tree(root: Path) -> set[str]:
    files = ["a.jpg", "x/b.jpg", "x/y/c.jpg", "x/y/z/d.jpg", "x/y/z/w/e.jpg", "p/f.png", "p q/g.jpg", "node_modules/h.jpg",
             ".hidden/i.jpg", "skip/j.jpg", *(f"many/{i:03d}/k.jpg" for i in range(40))]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"pretend jpeg")
    return {str(root / f) for f in files if not f.startswith(("node_modules", ".hidden", "skip"))}


def files_of(part: FolderPart, root: Path) -> set[str]:
    scan = scan_directory(part.folder, recursive=part.recursive, exclude=["skip"], relative_to=root)
    return {f.path for f in scan.files}


@pytest.mark.parametrize("target", [1, 3, 8, 30, 1000])
def test_parts_cover_every_file_once_and_each_flat_part_names_its_subfolders(tmp_path: Path, target: int) -> None:
    expected = make_tree(tmp_path)
    parts = split_tree(str(tmp_path), target, exclude=["skip"])
    found = [files_of(part, tmp_path) for part in parts]
    assert set().union(*found) == expected
    assert sum(len(f) for f in found) == len(expected)  # no file in two parts
    for part in parts:
        if not part.recursive:  # its subfolders are parts of their own, exactly those
            assert {p.folder for p in parts if os.path.dirname(p.folder) == part.folder} == set(part.parts_below)
    assert len(parts) >= min(target, 2) or target == 1
    assert all(not p.folder.endswith(("node_modules", ".hidden", "skip")) for p in parts)


def test_a_plan_part_emits_what_local_mode_decides(tmp_path: Path) -> None:
    (tmp_path / "same.jpg").write_bytes(b"1")
    (tmp_path / "changed.jpg").write_bytes(b"22")
    (tmp_path / "new.jpg").write_bytes(b"333")
    (tmp_path / "relabel.jpg").write_bytes(b"4444")
    scan = scan_directory(tmp_path)
    stat = {Path(f.path).name: f for f in scan.files}

    def known(name: str, size: int | None = None, description: str = "") -> IndexedFile:
        entry = stat.get(name)
        path = str(tmp_path / name)
        return IndexedFile(path_id(path), path, size if size is not None else entry.size if entry else 9,
                           entry.mtime if entry else 1.0, "f" * 32, description)

    existing = {f.path: f for f in [known("same.jpg"), known("changed.jpg", size=99, description="kept"),
                                    known("relabel.jpg", description="old"), known("gone.jpg")]}
    rows = _Rows()
    rows.add_plan(scan, existing, DescriptionMap({"relabel.jpg": "new words"}, tmp_path))
    table = rows.columns()
    by_kind: dict[str, list[str]] = {}
    for kind, path in zip(table["kind"], table["path"], strict=True):
        by_kind.setdefault(str(kind), []).append(Path(str(path)).name if path else "")
    assert sorted(by_kind[ENCODE]) == ["changed.jpg", "new.jpg"]
    assert by_kind[RELABEL] == ["relabel.jpg"] and by_kind[GONE] == ["gone.jpg"]
    unchanged = [int(s) for k, s in zip(table["kind"], table["size"], strict=True) if k == UNCHANGED]
    assert unchanged == [2]
    changed = list(table["path"]).index(str(tmp_path / "changed.jpg"))
    assert table["description"][changed] == "kept"  # an encoded file keeps its stored description


def test_manifest_paths(tmp_path: Path) -> None:
    base = str(tmp_path)
    assert manifest_path("photos/a.jpg", base) == str(tmp_path / "photos" / "a.jpg")
    assert manifest_path("/abs/./b.jpg", base) == "/abs/b.jpg"
    assert manifest_path("file:///abs/with%20space.jpg", base) == "/abs/with space.jpg"
    assert manifest_path("s3://bucket/key.jpg", base) == "s3://bucket/key.jpg"


def batch(rows: list[dict[str, object]], dim: int = 8) -> dict[str, np.ndarray]:
    columns = ["kind", "path", "size", "mtime", "row_id", "description", "reason", "fingerprint", "metadata"]
    out = {c: np.array([r.get(c, 0 if c in ("size", "mtime", "row_id") else "{}" if c == "metadata" else "") for r in rows],
                       dtype=object) for c in columns}
    out["vector"] = np.stack([np.asarray(r.get("vector", np.zeros(dim)), dtype=np.float32) for r in rows])
    return out


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_the_writer_applies_each_row_kind_and_batches_upserts_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MilvusStore(str(tmp_path / "w.db"), collection_name="w")
    try:
        store.open_collection("m", 8)
        photo = tmp_path / "photo.jpg"  # indexed before metadata was kept; its header names a camera
        exif = Image.Exif()
        exif[ExifTags.Base.Model] = "Pixel 7"
        Image.new("RGB", (40, 30), "red").save(photo, exif=exif)
        store.upsert([ImageRecord("/lib/gone.jpg", unit(1), 1, 1.0, "a" * 32),
                      ImageRecord("/lib/old.jpg", unit(2), 2, 2.0, "b" * 32, metadata=PhotoMetadata(camera="Old cam")),
                      ImageRecord(str(photo), unit(3), 3, 3.0, "c" * 32)])
        upserts: list[int] = []
        real_upsert = store.upsert
        monkeypatch.setattr(store, "upsert", lambda records: (upserts.append(len(records)), real_upsert(records)))
        monkeypatch.setattr(ray_index, "WRITE_BYTES", 8 * 4 * 3 * 2 + 400)  # about two rows per request
        encoded = [{"kind": ENCODE, "path": f"/lib/new{i}.jpg", "size": 10 + i, "mtime": 5.0, "fingerprint": f"{i:032x}",
                    "description": "d" if i == 0 else "", "vector": unit(10 + i),
                    "metadata": json.dumps(PhotoMetadata(camera=f"cam {i}", width=100 + i).to_dict())} for i in range(5)]
        done = write_rows(store, [batch(encoded[:3] + [{"kind": GONE, "row_id": path_id("/lib/gone.jpg")},
                                                      {"kind": UNCHANGED, "size": 7}]),
                                  batch(encoded[3:] + [{"kind": FAILED, "path": "/lib/bad.jpg", "reason": "truncated image"},
                                                       {"kind": RELABEL, "row_id": path_id("/lib/old.jpg"), "description": "new"},
                                                       {"kind": READ_METADATA, "row_id": path_id(str(photo)), "description": ""},
                                                       {"kind": UNCHANGED, "size": 2}])])
        assert done == {"indexed": 5, "unchanged": 9, "removed": 1, "descriptions_updated": 1, "metadata_read": 1,
                        "failed": [("/lib/bad.jpg", "truncated image")]}
        assert max(upserts) <= 2 and sum(upserts) == 5 + 2  # five encoded rows in small requests, one relabel, one header
        rows = {r["path"]: r for r in store.get([path_id(f"/lib/new{i}.jpg") for i in range(5)] + [path_id("/lib/old.jpg")],
                                                 with_vectors=True)}
        assert sorted(rows) == ["/lib/new0.jpg", "/lib/new1.jpg", "/lib/new2.jpg", "/lib/new3.jpg", "/lib/new4.jpg", "/lib/old.jpg"]
        assert rows["/lib/new0.jpg"]["description"] == "d" and rows["/lib/new3.jpg"]["fingerprint"] == f"{3:032x}"
        assert np.allclose(rows["/lib/new4.jpg"]["vector"], unit(14), atol=1e-6)
        assert rows["/lib/old.jpg"]["description"] == "new" and np.allclose(rows["/lib/old.jpg"]["vector"], unit(2), atol=1e-6)
        assert metadata_from_row(rows["/lib/old.jpg"]) == PhotoMetadata(camera="Old cam")  # a relabel keeps what the header said
        assert metadata_from_row(rows["/lib/new3.jpg"]) == PhotoMetadata(camera="cam 3", width=103)
        read = store.get([path_id(str(photo))], with_vectors=True)[0]
        assert metadata_from_row(read) == PhotoMetadata(camera="Pixel 7", width=40, height=30)
        assert np.allclose(read["vector"], unit(3), atol=1e-6)  # not re-encoded
        assert store.count() == 7
    finally:
        store.close()
