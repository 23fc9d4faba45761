"""Finding the image files to index: a folder walked recursively, or a list of paths.

Hidden entries (and AppleDouble `._*` files) are skipped, symlink loops are not followed, and a
folder that cannot be listed is reported and remembered, so that the rows under it are kept.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from photoseek.errors import InvalidArgumentError
from photoseek.indexing.decode import IMAGE_EXTENSIONS, is_raw


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute
    size: int
    mtime: float


@dataclass(frozen=True)
class FailedFile:
    path: str
    reason: str


@dataclass
class ScanResult:
    files: list[FileEntry] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    # folders that could not be listed: rows under them must survive, we cannot tell if files are gone
    unlisted_dirs: list[str] = field(default_factory=list)
    # with recursive=False: the subfolders that a recursive scan would have entered
    subfolders: list[str] = field(default_factory=list)


def existing_folder(folder: str | os.PathLike[str], what: str = "image folder") -> Path:
    """The folder (`~` expanded), or the error every caller gives for one that is not there."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InvalidArgumentError(f"{what} {str(folder)!r} does not exist or is not a folder")
    return path


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # also AppleDouble "._*" files (and .git, .thumbnails, .Trash...)


# Folders that hold no one's photos, only copies, caches or system files (rclip skips the same):
# Synology thumbnails, package trees, Windows system and recycle folders, Synology/QNAP recycle bins.
EXCLUDED_FOLDERS = frozenset({"@eaDir", "node_modules", "System Volume Information", "$RECYCLE.BIN", "#recycle", "@Recycle"})


def _excluded(name: str, relative: str, patterns: Sequence[str]) -> bool:
    """A user's --exclude glob matches an entry's name or its path below the indexed folder."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(relative, p) for p in patterns)


# Kernel and virtual filesystems: never photos, and walking them is harmful (/proc holds every
# process's working folder, so the same files appear under endless paths).
PSEUDO_FILESYSTEMS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs",
                      "pstore", "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs", "binfmt_misc", "efivarfs", "autofs",
                      "rpc_pipefs", "nsfs", "selinuxfs"}
OUTSIDE = "outside the folders this index may read (reached through a symbolic link)"


def pseudo_filesystem_devices() -> set[int]:
    """The device numbers of the pseudo filesystems mounted here (Linux; empty elsewhere)."""
    devices = set()
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return {os.stat(p).st_dev for p in ("/proc", "/sys") if os.path.isdir(p)}
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2] in PSEUDO_FILESYSTEMS:
            try:
                devices.add(os.stat(fields[1].replace("\\040", " ")).st_dev)
            except OSError:
                continue
    return devices


def _inside(real: str, within: Sequence[str]) -> bool:
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in within)


def scan_directory(root: str | Path, extensions: Iterable[str] = IMAGE_EXTENSIONS, within: Sequence[str] = (),
                   exclude: Sequence[str] = (), recursive: bool = True, relative_to: str | Path | None = None) -> ScanResult:
    """Every image file under `root`, recursively; hidden entries and EXCLUDED_FOLDERS skipped, symlink loops
    not followed, pseudo filesystems (/proc, /sys, /dev...) not entered. `exclude`: glob patterns matched
    against each entry's name and its path relative to `root` (`*.tmp`, `exports/*`, `Screenshots`).
    With `within` (real paths), nothing whose real path lies outside them is read: a symbolic link out of
    an allowed folder is reported, not followed. With `recursive=False`, only `root`'s own files are listed and
    the subfolders it would enter are returned in `subfolders` (a cluster lists a tree in parts this way);
    `relative_to`: the indexed folder `exclude` patterns are relative to, when `root` is a part of it."""
    extensions = {e.lower() for e in extensions}
    result = ScanResult()
    root_path = os.path.abspath(os.fspath(root))
    base = os.path.abspath(os.fspath(relative_to)) if relative_to is not None else root_path
    within = [os.path.realpath(w) for w in within]
    pseudo = pseudo_filesystem_devices()
    seen_dirs: set[tuple[int, int]] = set()
    stack = [root_path]
    while stack:
        folder = stack.pop()
        if within and not _inside(os.path.realpath(folder), within):
            result.failed.append(FailedFile(folder, OUTSIDE))
            result.unlisted_dirs.append(folder)  # not read is not empty: its rows are kept (a folder swapped for a link)
            continue
        try:
            info = os.stat(folder)
        except OSError as error:
            result.failed.append(FailedFile(folder, f"cannot open folder: {error.strerror or error}"))
            result.unlisted_dirs.append(folder)
            continue
        if info.st_dev in pseudo:
            if folder == root_path:
                result.failed.append(FailedFile(folder, "a system pseudo filesystem (such as /proc, /sys or /dev), not photos"))
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen_dirs:
            continue  # a symlink loop or a second link to a folder already scanned
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as error:
            result.failed.append(FailedFile(folder, f"cannot list folder: {error.strerror or error}"))
            result.unlisted_dirs.append(folder)
            continue
        subfolders = []
        found: list[FileEntry] = []
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            if exclude and _excluded(entry.name, os.path.relpath(entry.path, base).replace(os.sep, "/"), exclude):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                if entry.name not in EXCLUDED_FOLDERS:
                    subfolders.append(entry.path)
                continue
            if os.path.splitext(entry.name)[1].lower() not in extensions:
                continue
            if within and entry.is_symlink() and not _inside(os.path.realpath(entry.path), within):
                result.failed.append(FailedFile(entry.path, OUTSIDE))
                continue
            try:
                st = entry.stat()
            except OSError as error:
                reason = "broken symbolic link" if entry.is_symlink() else f"cannot stat: {error.strerror or error}"
                result.failed.append(FailedFile(entry.path, reason))
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(FileEntry(entry.path, st.st_size, st.st_mtime))
        result.files.extend(_without_raw_twins(found))
        if not recursive:
            result.subfolders = subfolders
            break
        stack.extend(reversed(subfolders))
    return result


def _without_raw_twins(files: list[FileEntry]) -> list[FileEntry]:
    """A RAW file with a same-named JPEG (or HEIC, PNG...) beside it is left out, as rclip does: the camera
    wrote both of one shot, and the JPEG is what was kept and edited."""
    developed = {os.path.splitext(f.path)[0].lower() for f in files if not is_raw(f.path)}
    return [f for f in files if not (is_raw(f.path) and os.path.splitext(f.path)[0].lower() in developed)]


def entries_for_paths(paths: Iterable[str | os.PathLike[str]]) -> ScanResult:
    """FileEntries for an explicit list of files; missing or odd ones become failures."""
    result = ScanResult()
    for raw in paths:
        path = os.path.abspath(os.fspath(raw))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            result.failed.append(FailedFile(path, "file not found"))
            continue
        except OSError as error:
            result.failed.append(FailedFile(path, f"cannot stat: {error.strerror or error}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            result.failed.append(FailedFile(path, "is a folder (use index_directory for folders)"))
        elif not stat.S_ISREG(st.st_mode):
            result.failed.append(FailedFile(path, "not a regular file"))
        else:
            result.files.append(FileEntry(path, st.st_size, st.st_mtime))
    return result
