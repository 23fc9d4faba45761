"""What every route needs: the engine, the index jobs, the thumbnail cache and the server's limits, handed to
routes as a FastAPI dependency (`Context`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from photoseek.indexing.files import FileNotServed, read_indexed_file
from photoseek.protocols import ServedEngine
from photoseek.results import SearchResult
from photoseek.servers.jobs import IndexJobs
from photoseek.servers.thumbnails import ThumbnailCache

MAX_QUERY_CHARS = 1000  # far past what a text tower reads (77 tokens); keeps a request's work bounded


class HTTPError(Exception):
    """An answer with this status and `{"error": message}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ServerContext:
    engine: ServedEngine
    jobs: IndexJobs
    thumbnails: ThumbnailCache
    index_roots: list[str]  # real paths; POST /api/index reads only under them (when any)
    serve_roots: list[str]  # real paths; images are served only from under them (when any)
    max_upload_bytes: int

    def indexed_record(self, image_id: int) -> dict[str, Any]:
        record = self.engine.image_record(image_id)
        if record is None:
            raise HTTPError(404, f"no indexed image has id {image_id}")
        return record

    def indexed_file(self, image_id: int) -> tuple[bytes, dict[str, Any]]:
        """The indexed file's bytes, only if they are still what was indexed (see indexing/files.py)."""
        record = self.indexed_record(image_id)
        try:
            return read_indexed_file(record, self.serve_roots), record
        except FileNotServed as refused:
            raise HTTPError(refused.status, str(refused)) from None


def server_context(request: Request) -> ServerContext:
    context: ServerContext = request.app.state.context
    return context


Context = Annotated[ServerContext, Depends(server_context)]


def results_payload(results: list[SearchResult]) -> list[dict[str, Any]]:
    return [{**r.to_dict(), "id": str(r.id), "image_url": f"/api/images/{r.id}",
             "thumbnail_url": f"/api/images/{r.id}/thumbnail"} for r in results]
