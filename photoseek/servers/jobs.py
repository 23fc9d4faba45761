"""Background indexing jobs for the HTTP server: one worker thread, jobs queued in order."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from photoseek.errors import ImageSearchError, IndexCancelled
from photoseek.indexing.pipeline import IndexProgress, IndexSummary
from photoseek.protocols import ServedEngine


@dataclass
class IndexJob:
    id: str
    folder: str
    state: str = "queued"  # queued → running → done | failed | cancelled
    total: int = 0
    done: int = 0
    failed: int = 0
    unchanged: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    summary: IndexSummary | None = None
    cancel_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "folder": self.folder, "state": self.state, "total": self.total, "done": self.done,
            "failed": self.failed, "unchanged": self.unchanged, "created": self.created, "started": self.started,
            "finished": self.finished, "error": self.error,
            "summary": self.summary.to_dict() if self.summary else None,
        }


class IndexJobs:
    """Runs `engine.index_directory` jobs one after another and keeps their progress."""

    def __init__(self, engine: ServedEngine, keep: int = 100, within: Sequence[str] = ()):
        """`within`: the folders (real paths) a job may read; nothing outside them is indexed."""
        self._engine = engine
        self._within = list(within)
        self._jobs: dict[str, IndexJob] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._keep = keep
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="index-job")

    def submit(self, folder: str, descriptions: dict[str, Any] | None = None, exclude: Sequence[str] = ()) -> IndexJob:
        with self._lock:
            job = IndexJob(id=str(next(self._ids)), folder=folder)
            self._jobs[job.id] = job
            for old in list(self._jobs)[: max(0, len(self._jobs) - self._keep)]:
                if self._jobs[old].state in ("done", "failed", "cancelled"):
                    del self._jobs[old]
        self._pool.submit(self._run, job, descriptions, list(exclude))
        return job

    def get(self, job_id: str) -> IndexJob | None:
        return self._jobs.get(job_id)

    def all(self) -> list[IndexJob]:
        return list(self._jobs.values())

    def cancel(self, job_id: str) -> IndexJob | None:
        """Stop a job: a queued one never starts, a running one stops after the file in hand (stored batches stay)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state in ("queued", "running"):
                job.cancel_requested = True
                if job.state == "queued":
                    job.state, job.finished = "cancelled", time.time()
        return job

    def _run(self, job: IndexJob, descriptions: dict[str, Any] | None, exclude: list[str]) -> None:
        with self._lock:
            if job.cancel_requested:
                return
            job.state, job.started = "running", time.time()

        def progress(update: IndexProgress) -> None:
            job.total, job.done, job.failed, job.unchanged = update.total, update.done, update.failed, update.unchanged
            if job.cancel_requested:
                raise IndexCancelled(f"index job {job.id} was cancelled")

        try:
            job.summary = self._engine.index_directory(job.folder, descriptions, progress=progress, within=self._within,
                                                       exclude=exclude)
            # the summary is the whole run: it also counts what the scan could not read (no progress is reported for it)
            job.failed, job.unchanged = len(job.summary.failed), job.summary.unchanged
            job.state = "done"
        except IndexCancelled:
            job.state = "cancelled"
        except ImageSearchError as error:
            job.state, job.error = "failed", str(error)
        except Exception as error:  # a job must report, never kill the worker
            job.state, job.error = "failed", f"{error.__class__.__name__}: {error}"
        finally:
            job.finished = time.time()

    def close(self) -> None:
        """At shutdown: queued jobs are dropped and a running one stops after the file in hand (what it stored stays),
        so that the process can end at once (its thread would otherwise be waited for)."""
        for job in self.all():
            self.cancel(job.id)
        self._pool.shutdown(wait=False, cancel_futures=True)
