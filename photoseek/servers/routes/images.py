"""Indexed images and their thumbnails, by id only: no path from a request reaches the file system, and a file
is served only while its bytes are the ones indexed (indexing/files.py)."""

from __future__ import annotations

import io
import os

from fastapi import APIRouter
from fastapi.responses import Response

from photoseek.indexing.decode import is_raw, load_rgb
from photoseek.indexing.files import unchanged_on_disk, under
from photoseek.servers.routes.context import Context

MEDIA_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
               "gif": "image/gif", "tif": "image/tiff", "tiff": "image/tiff", "heic": "image/heic", "heif": "image/heif"}
router = APIRouter(tags=["images"])


@router.get("/api/images/{image_id}")
def image(context: Context, image_id: int) -> Response:
    data, record = context.indexed_file(image_id)
    if is_raw(record["path"]):  # no browser shows a RAW file: its preview (or developed picture) as a JPEG
        buffer = io.BytesIO()
        load_rgb(data, raw=True).save(buffer, format="JPEG", quality=92)
        return Response(buffer.getvalue(), media_type="image/jpeg")
    return Response(data, media_type=MEDIA_TYPES.get(record.get("ext", ""), "application/octet-stream"))


@router.get("/api/images/{image_id}/thumbnail")
def thumbnail(context: Context, image_id: int) -> Response:
    record = context.indexed_record(image_id)
    # A cached thumbnail was made from verified bytes, so a stat suffices to answer with it; reading and
    # hashing the whole original for each of a results page's thumbnails would cost ~10 ms per photo.
    cached = context.thumbnails.read(image_id, float(record["mtime"]))
    roots = context.serve_roots
    if cached is None or not unchanged_on_disk(record) or (roots and not under(os.path.realpath(record["path"]), roots)):
        data, record = context.indexed_file(image_id)
        cached = context.thumbnails.make(image_id, data, float(record["mtime"]), raw=is_raw(record["path"]))
    return Response(cached, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})
