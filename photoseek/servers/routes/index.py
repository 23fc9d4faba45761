"""Index jobs: start one for a folder under the server's roots, follow it, cancel it."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints

from photoseek.errors import InvalidArgumentError
from photoseek.indexing.files import under
from photoseek.indexing.scan import existing_folder
from photoseek.servers.jobs import IndexJob
from photoseek.servers.routes.context import Context, HTTPError

router = APIRouter(tags=["index"])


class IndexBody(BaseModel):
    folder: Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00]*$")] = Field(
        description="an absolute path (no NUL character)")
    descriptions: dict[str, Any] | None = None
    exclude: list[Annotated[str, StringConstraints(max_length=200)]] = Field([], max_length=100,
                                                                             description="glob patterns of names or relative paths to leave out")


@router.post("/api/index", status_code=202)
def start_index(context: Context, body: IndexBody) -> dict[str, Any]:
    if not os.path.isabs(body.folder):
        raise InvalidArgumentError(f"folder {body.folder!r} must be an absolute path")
    folder = os.path.abspath(body.folder)
    # the roots first, on the real path: a client learns nothing about what exists outside them
    if context.index_roots and not under(os.path.realpath(folder), context.index_roots):
        raise HTTPError(403, f"this server only indexes folders under: {', '.join(context.index_roots)}")
    existing_folder(body.folder, what="folder")
    return context.jobs.submit(folder, body.descriptions, body.exclude).to_dict()


def _job_state(job_id: str, found: IndexJob | None) -> dict[str, Any]:
    if found is None:
        raise HTTPError(404, f"no job {job_id}")
    return found.to_dict()


@router.delete("/api/index/{job_id}")
def cancel_index_job(context: Context, job_id: str) -> dict[str, Any]:
    return _job_state(job_id, context.jobs.cancel(job_id))


@router.get("/api/index")
@router.get("/api/jobs")
def list_jobs(context: Context) -> list[dict[str, Any]]:
    return [j.to_dict() for j in context.jobs.all()]


@router.get("/api/index/{job_id}")
@router.get("/api/jobs/{job_id}")
def job(context: Context, job_id: str) -> dict[str, Any]:
    return _job_state(job_id, context.jobs.get(job_id))
