"""Searches: by words (composed with added and subtracted terms), in batches, by an uploaded image, like an
indexed photo, and the groups of copies."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import Field, StringConstraints

from photoseek.engine.duplicates import DEFAULT_MAX_HASH_DISTANCE, DEFAULT_SIMILARITY
from photoseek.errors import InvalidArgumentError
from photoseek.query import compose
from photoseek.servers.request_filters import FilterBody, PhotoFilterFields, make_filter, query_filter
from photoseek.servers.routes.context import MAX_QUERY_CHARS, Context, HTTPError, results_payload
from photoseek.store.filters import SearchFilter

router = APIRouter(tags=["search"])


class BatchSearchBody(FilterBody):
    queries: list[Annotated[str, StringConstraints(max_length=MAX_QUERY_CHARS)]] = Field(..., min_length=1, max_length=100)
    top_k: int = 10


@router.get("/api/search")
def search(context: Context, q: str = Query(..., max_length=MAX_QUERY_CHARS, description="what to look for, in words"),
           top_k: int = 10,
           add: list[str] | None = Query(None, description="terms to add: words, 'W:words' (weight W), or id:N (an indexed image)"),
           subtract: list[str] | None = Query(None, description="terms to subtract, written like add"),
           search_filter: SearchFilter | None = Depends(query_filter)) -> dict[str, Any]:
    started = time.perf_counter()
    if add or subtract:
        for term in [*(add or []), *(subtract or [])]:
            if len(term) > MAX_QUERY_CHARS:
                raise InvalidArgumentError(f"a query term is longer than {MAX_QUERY_CHARS} characters")
        # a request names images by id only: never a path on this machine
        terms = compose(q, add or [], subtract or [], allow_paths=False)
        results = context.engine.search_composed(terms, top_k, search_filter)
    else:
        results = context.engine.search(q, top_k, search_filter)
    return {"query": q, "results": results_payload(results), "took_ms": round((time.perf_counter() - started) * 1000, 1)}


@router.post("/api/search/batch")
def search_batch(context: Context, body: BatchSearchBody) -> dict[str, Any]:
    result_lists = context.engine.search_batch(body.queries, body.top_k,
                                               make_filter(body.folder, body.ext, body.modified_after, body.modified_before, body))
    return {"results": [{"query": q, "results": results_payload(r)} for q, r in zip(body.queries, result_lists, strict=True)]}


@router.post("/api/search/image")
async def search_image(context: Context, file: UploadFile = File(...), top_k: int = Form(10), folder: str | None = Form(None),
                       ext: list[str] | None = Form(None), modified_after: str | None = Form(None),
                       modified_before: str | None = Form(None), taken_after: str | None = Form(None, max_length=40),
                       taken_before: str | None = Form(None, max_length=40), camera: str | None = Form(None, max_length=100),
                       near: str | None = Form(None, max_length=80),
                       min_width: int | None = Form(None, ge=1, le=1_000_000)) -> dict[str, Any]:
    # a bad filter fails before the upload is read
    search_filter = make_filter(folder, ext, modified_after, modified_before,
                                PhotoFilterFields(taken_after=taken_after, taken_before=taken_before, camera=camera, near=near,
                                                  min_width=min_width))
    data = bytearray()
    while chunk := await file.read(1 << 20):
        data += chunk
        if len(data) > context.max_upload_bytes:
            raise HTTPError(413, f"upload larger than {context.max_upload_bytes // (1024 * 1024)} MB")
    # decoding a large upload takes seconds of CPU: off the event loop, so /healthz and small requests stay fast
    results = await run_in_threadpool(context.engine.search_by_image, bytes(data), top_k, search_filter)
    return {"results": results_payload(results)}


@router.get("/api/similar/{image_id}")
def similar(context: Context, image_id: int, top_k: int = 10,
            search_filter: SearchFilter | None = Depends(query_filter)) -> dict[str, Any]:
    context.indexed_record(image_id)
    return {"results": results_payload(context.engine.similar(image_id, top_k, search_filter))}


@router.get("/api/duplicates")
def duplicates(context: Context, similarity: float = Query(DEFAULT_SIMILARITY, gt=0, le=1),
               max_hash_distance: int = Query(DEFAULT_MAX_HASH_DISTANCE, ge=0, le=64),
               search_filter: SearchFilter | None = Depends(query_filter)) -> dict[str, Any]:
    """Groups of copies (confirmed pixel by pixel), best copy first (see docs/searching.md, Duplicates)."""
    found = context.engine.find_duplicates(similarity, max_hash_distance, search_filter, within=context.serve_roots)
    return {"groups": [results_payload(group) for group in found.groups], "photos_compared": found.photos_compared,
            "without_hash": found.without_hash, "pairs_checked": found.pairs_checked, "unreadable": found.unreadable}
