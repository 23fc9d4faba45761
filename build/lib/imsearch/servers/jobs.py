"""Background indexing jobs for the HTTP server: one worker thread, jobs queued in order."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from imsearch.errors import ImageSearchError
from imsearch.indexing.pipeline import IndexProgress, IndexSummary
from imsearch.protocols import SearchEngine


@dataclass
class IndexJob:
    id: str
    folder: str
    state: str = "queued"  # queued → running → done | failed
    total: int = 0
    done: int = 0
    failed: int = 0
    unchanged: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    summary: IndexSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "folder": self.folder, "state": self.state, "total": self.total, "done": self.done,
            "failed": self.failed, "unchanged": self.unchanged, "created": self.created, "started": self.started,
            "finished": self.finished, "error": self.error,
            "summary": self.summary.to_dict() if self.summary else None,
        }


class IndexJobs:
    """Runs `engine.index_directory` jobs one after another and keeps their progress."""

    def __init__(self, engine: SearchEngine, keep: int = 100):
        self._engine = engine
        self._jobs: dict[str, IndexJob] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._keep = keep
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="index-job")

    def submit(self, folder: str, descriptions: dict[str, Any] | None = None) -> IndexJob:
        with self._lock:
            job = IndexJob(id=str(next(self._ids)), folder=folder)
            self._jobs[job.id] = job
            for old in list(self._jobs)[: max(0, len(self._jobs) - self._keep)]:
                if self._jobs[old].state in ("done", "failed"):
                    del self._jobs[old]
        self._pool.submit(self._run, job, descriptions)
        return job

    def get(self, job_id: str) -> IndexJob | None:
        return self._jobs.get(job_id)

    def all(self) -> list[IndexJob]:
        return list(self._jobs.values())

    def _run(self, job: IndexJob, descriptions: dict[str, Any] | None) -> None:
        job.state, job.started = "running", time.time()

        def progress(update: IndexProgress) -> None:
            job.total, job.done, job.failed, job.unchanged = update.total, update.done, update.failed, update.unchanged

        try:
            job.summary = self._engine.index_directory(job.folder, descriptions, progress=progress)
            job.state = "done"
        except ImageSearchError as error:
            job.state, job.error = "failed", str(error)
        except Exception as error:  # a job must report, never kill the worker
            job.state, job.error = "failed", f"{error.__class__.__name__}: {error}"
        finally:
            job.finished = time.time()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
