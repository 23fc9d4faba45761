"""Keeping an index current: folders watched with watchdog, changes debounced and applied as incremental
index runs of the folders they touched.

A change names a folder to bring up to date (the folder of a created, changed or deleted file; the
folder above a created, deleted or moved folder; for a move, the nearest folder holding both ends, so
that the moved file's vector is reused rather than encoded again). Once no event has come for
`debounce` seconds, the touched folders (those inside another one dropped) are handed to `apply`,
which runs the usual incremental index on each: unchanged files cost a stat, and every rule of a
normal run holds (moves reuse vectors, a folder that cannot be listed keeps its rows).

A watched folder that disappears (an unmounted disk) keeps its rows and is looked for every
`poll_seconds`; when it is back, it is watched again and brought up to date in full.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from photoseek.indexing.decode import IMAGE_EXTENSIONS
from photoseek.indexing.scan import EXCLUDED_FOLDERS

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

DEFAULT_DEBOUNCE_SECONDS = 1.0
DEFAULT_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class WatchEvent:
    """What the watcher tells its caller: folders brought up to date, or a watched folder gone or back."""

    kind: str  # "watching" (the observer runs), "changed" (folders handed to apply), "gone", "back"
    folders: tuple[str, ...]


class FolderWatcher:
    """Watches `roots` until `stop` is set; `apply(folders)` brings those folders up to date (it runs on
    the watcher's thread, one batch at a time; an exception from it is passed to `on_error` and the
    folders are tried again after the next quiet period)."""

    def __init__(self, roots: Sequence[str], apply: Callable[[list[str]], None],
                 on_event: Callable[[WatchEvent], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 debounce: float = DEFAULT_DEBOUNCE_SECONDS, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 catch_up: bool = True):
        from photoseek.extras import require

        require("--watch", "watchdog")  # a core dependency; an install without it gets a clear message
        self.roots = [os.path.abspath(os.fspath(r)) for r in roots]
        self._apply, self._on_event, self._on_error = apply, on_event or (lambda _: None), on_error or (lambda _: None)
        self.debounce, self.poll_seconds = debounce, poll_seconds
        # once watching, bring every root up to date: what changed before the observer started is not missed
        self.catch_up = catch_up
        self._pending: set[str] = set()
        self._last_event = 0.0
        self._changed = threading.Condition()
        self._watches: dict[str, ObservedWatch | None] = {}
        # the filesystem each root is on: an unmounted disk leaves its mount point behind as an empty folder of
        # the filesystem above, which must read as "gone", not as "every photo deleted"
        self._devices: dict[str, int] = {}
        self._observer: BaseObserver | None = None

    # ------------------------------------------------------------------- events (watchdog's thread)

    def _on_filesystem_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):  # reads: nothing changed
            return
        paths = [os.fsdecode(event.src_path)]
        dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else ""
        if dest:
            paths.append(dest)
        if not event.is_directory and not any(_may_be_photo(p) for p in paths):
            return  # an editor's temporary file, a sidecar: not worth a run
        if event.is_directory and event.event_type == "modified":
            return  # a folder's own mtime: its files' events say what changed
        folders = [os.path.dirname(p) for p in paths]
        if len(folders) == 2:  # a move: the folder that holds both ends, so the vector is reused
            folders = [os.path.commonpath(folders)]
        scopes = [s for s in (self._clamp(f) for f in folders) if s is not None]
        if not scopes:
            return
        with self._changed:
            self._pending.update(scopes)
            self._last_event = time.monotonic()
            self._changed.notify_all()

    def _clamp(self, folder: str) -> str | None:
        """The folder to bring up to date for an event in `folder`: itself inside a root, the root for an event
        on the root itself, None outside every root."""
        for root in self.roots:
            if folder == root or folder.startswith(root.rstrip(os.sep) + os.sep):
                return folder
            if root.startswith(folder.rstrip(os.sep) + os.sep):
                return root  # an event on the root itself (created, deleted, moved): the whole root
        return None

    # ------------------------------------------------------------------- the loop (caller's thread)

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set (blocks; a KeyboardInterrupt also stops it)."""
        from watchdog.observers import Observer

        self._observer = Observer()
        for root in self.roots:
            self._watches[root] = self._schedule(root)
        self._observer.start()
        self._on_event(WatchEvent("watching", tuple(self.roots)))
        if self.catch_up:
            with self._changed:
                self._pending.update(r for r, watch in self._watches.items() if watch is not None)
        next_poll = time.monotonic() + self.poll_seconds
        try:
            while not stop.is_set():
                with self._changed:
                    self._changed.wait(timeout=min(self.debounce, self.poll_seconds) / 2)
                    quiet = time.monotonic() - self._last_event >= self.debounce
                    due = sorted(self._pending) if self._pending and quiet else []
                    if due:
                        self._pending.clear()
                if due:
                    self._run_apply(_outermost([f for f in due if self._present(f)]))
                if time.monotonic() >= next_poll:
                    self._poll_roots()
                    next_poll = time.monotonic() + self.poll_seconds
        finally:
            self._observer.stop()
            self._observer.join(timeout=10)

    def _run_apply(self, folders: list[str]) -> None:
        if not folders:
            return
        try:
            self._apply(folders)
        except Exception as error:  # the store went away for a moment, a disk error: try again later
            self._on_error(error)
            with self._changed:
                self._pending.update(folders)
                self._last_event = time.monotonic()
            return
        self._on_event(WatchEvent("changed", tuple(folders)))

    def _present(self, folder: str) -> bool:
        """Whether `folder` can be brought up to date: its root is mounted (a vanished root keeps its rows)."""
        root = next(r for r in self.roots if folder == r or folder.startswith(r.rstrip(os.sep) + os.sep))
        return self._mounted(root) and self._watches.get(root) is not None

    def _mounted(self, root: str) -> bool:
        try:
            device = os.stat(root).st_dev
        except OSError:
            return False
        return os.path.isdir(root) and self._devices.setdefault(root, device) == device

    def _poll_roots(self) -> None:
        assert self._observer is not None
        for root, watch in list(self._watches.items()):
            mounted = self._mounted(root)
            if watch is not None and not mounted:
                self._unschedule(watch)
                self._watches[root] = None
                self._on_event(WatchEvent("gone", (root,)))
            elif watch is None and mounted:
                self._watches[root] = self._schedule(root)
                if self._watches[root] is not None:
                    self._on_event(WatchEvent("back", (root,)))
                    self._run_apply([root])  # what changed while it was away

    def _schedule(self, root: str) -> ObservedWatch | None:
        from watchdog.events import FileSystemEventHandler

        assert self._observer is not None
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                watcher._on_filesystem_event(event)

        if not self._mounted(root):
            return None
        try:
            return self._observer.schedule(Handler(), root, recursive=True)
        except OSError:  # gone between the check and the watch, or out of inotify watches
            return None

    def _unschedule(self, watch: ObservedWatch) -> None:
        assert self._observer is not None
        try:
            self._observer.unschedule(watch)
        except (KeyError, OSError):  # the kernel already dropped it with the folder
            pass


def _may_be_photo(path: str) -> bool:
    name = os.path.basename(path)
    if name.startswith(".") or any(part in EXCLUDED_FOLDERS for part in path.split(os.sep)):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _outermost(folders: list[str]) -> list[str]:
    """The folders none of the others contains (an index run of a folder covers its subfolders)."""
    kept: list[str] = []
    for folder in sorted(set(folders), key=len):
        if not any(folder == k or folder.startswith(k.rstrip(os.sep) + os.sep) for k in kept):
            kept.append(folder)
    return sorted(kept)
