"""Health, stats and the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from photoseek.servers.routes.context import Context

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
router = APIRouter()


@router.get("/healthz", tags=["service"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/api/stats", tags=["service"])
def stats(context: Context) -> dict[str, Any]:
    return {**context.engine.get_stats(), "jobs_running": sum(j.state == "running" for j in context.jobs.all())}


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")
