"""Reach a running image_search server instead of opening its Milvus Lite database.

Milvus Lite lets one process at a time open a database. While `--mode serve` holds it, the server
advertises itself in a small file beside the database (`<db>.server.json`: its URL and PID), and
the CLI, meeting the lock, talks to that server's HTTP API instead: same commands, same output.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imsearch.errors import InvalidArgumentError, RemoteServerError, StoreError
from imsearch.indexing.pipeline import FailedFile, IndexProgress, IndexSummary, ProgressCallback
from imsearch.query import QueryTerm
from imsearch.results import SearchResult

if TYPE_CHECKING:
    from milvus_store import SearchFilter


def advert_path(lite_path: str) -> Path:
    return Path(lite_path + ".server.json")


def write_advert(lite_path: str, url: str, token_required: bool) -> Path:
    path = advert_path(lite_path)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"url": url, "pid": os.getpid(), "token_required": token_required}))
    os.replace(temporary, path)
    return path


def remove_advert(lite_path: str) -> None:
    path = advert_path(lite_path)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def find_server(lite_path: str) -> dict[str, Any] | None:
    """The advert of a live server holding `lite_path`, or None."""
    try:
        advert = json.loads(advert_path(lite_path).read_text())
        os.kill(int(advert["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(advert)


class RemoteEngine:
    """The parts of ImageSearchEngine the CLI uses, over a running server's HTTP API."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def _call(self, method: str, route: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, route, **kwargs)
        except httpx.HTTPError as error:
            raise StoreError(f"the image_search server at {self.url} did not answer: {error}") from None
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code == 401:
            raise InvalidArgumentError(f"the server at {self.url} needs a token: pass --token or set IMAGE_SEARCH_TOKEN")
        if response.status_code >= 400:
            message = body.get("error") or json.dumps(body.get("detail", response.text))
            raise (InvalidArgumentError if response.status_code < 500 else RemoteServerError)(f"server: {message}")
        return body

    @staticmethod
    def _results(items: list[dict[str, Any]]) -> list[SearchResult]:
        return [SearchResult(rank=r["rank"], path=r["path"], score=r["score"], description=r.get("description", ""),
                             id=int(r["id"]), size=r.get("size", 0), mtime=r.get("mtime", 0.0),
                             query_encoder=r.get("query_encoder", "")) for r in items]

    @staticmethod
    def _filter_fields(search_filter: SearchFilter | None) -> dict[str, Any]:
        """A filter as the API's fields (folder, ext, modified_after, modified_before), empty ones left out."""
        if search_filter is None:
            return {}
        def seconds(value: float | None) -> str | None:
            return None if value is None else repr(float(value))

        fields: dict[str, Any] = {"folder": search_filter.path_prefix, "ext": list(search_filter.extensions) or None,
                                  "modified_after": seconds(search_filter.modified_after),
                                  "modified_before": seconds(search_filter.modified_before)}
        return {name: value for name, value in fields.items() if value is not None}

    def search_batch(self, queries: Sequence[str], top_k: int = 5,
                     search_filter: SearchFilter | None = None) -> list[list[SearchResult]]:
        body = self._call("POST", "/api/search/batch",
                          json={"queries": list(queries), "top_k": top_k, **self._filter_fields(search_filter)})
        return [self._results(x["results"]) for x in body["results"]]

    def search_by_image(self, image: str, top_k: int = 5, search_filter: SearchFilter | None = None) -> list[SearchResult]:
        with open(image, "rb") as handle:
            body = self._call("POST", "/api/search/image", files={"file": (os.path.basename(image), handle)},
                              data={"top_k": str(top_k), **self._filter_fields(search_filter)})
        return self._results(body["results"])

    def search_composed(self, terms: Sequence[QueryTerm], top_k: int = 5,
                        search_filter: SearchFilter | None = None) -> list[SearchResult]:
        """Through the server's `/api/search`: image terms go as indexed ids (a file path is turned into
        the id it was indexed under; the server never opens paths a request names)."""
        from milvus_store import path_id

        def written(term: QueryTerm) -> str:
            what = term.text if term.text is not None else \
                f"id:{term.image_id if term.image_id is not None else path_id(os.path.abspath(str(term.image)))}"
            return f"{abs(term.weight):g}:{what}"

        first, rest = terms[0], list(terms[1:])
        if first.weight < 0:
            raise InvalidArgumentError("the first term of a composed query must have a positive weight")
        params: dict[str, Any] = {"q": written(first), "top_k": top_k,
                                  "add": [written(t) for t in rest if t.weight > 0],
                                  "subtract": [written(t) for t in rest if t.weight < 0], **self._filter_fields(search_filter)}
        return self._results(self._call("GET", "/api/search", params=params)["results"])

    def similar(self, image: str, top_k: int = 5, search_filter: SearchFilter | None = None) -> list[SearchResult]:
        from milvus_store import path_id

        return self._results(self._call("GET", f"/api/similar/{path_id(os.path.abspath(image))}",
                                        params={"top_k": top_k, **self._filter_fields(search_filter)})["results"])

    def get_stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/stats"))

    def index_directory(self, image_dir: str, descriptions: Mapping[str, Any] | None = None,
                        progress: ProgressCallback | None = None, exclude: Sequence[str] = ()) -> IndexSummary:
        job = self._call("POST", "/api/index", json={"folder": os.path.abspath(image_dir), "descriptions": descriptions,
                                                     "exclude": list(exclude)})
        while job["state"] in ("queued", "running"):
            time.sleep(0.3)
            job = self._call("GET", f"/api/jobs/{job['id']}")
            if progress:
                progress(IndexProgress(job["total"], job["done"], job["failed"], job["unchanged"]))
        if job["state"] == "failed":
            raise RemoteServerError(f"server: {job['error']}")
        s = job["summary"]
        return IndexSummary(indexed=s["indexed"], unchanged=s["unchanged"], removed=s["removed"], moved=s.get("moved", 0),
                            descriptions_updated=s["descriptions_updated"],
                            failed=[FailedFile(f["path"], f["reason"]) for f in s["failed"]], seconds=s["seconds"],
                            stage_seconds=s["stage_seconds"])

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
