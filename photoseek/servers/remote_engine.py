"""Reach a running photoseek server instead of opening the store.

While `--mode serve` runs, this user's CLI reaches it through a private Unix socket (servers/local_channel.py
says when one is trusted) and uses its HTTP API: same commands, same output. For Lite this is the only way in
(one process at a time may open a database); for any store it makes a one-shot search cost a request to a warm
model and store, not an import of pymilvus, a connection and a model load. What the server answers is checked
for its shape before it is used (a result's path a string, its score a finite number).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from photoseek.engine.duplicates import DEFAULT_MAX_HASH_DISTANCE, DEFAULT_SIMILARITY
from photoseek.errors import InvalidArgumentError, RemoteServerError, StoreError
from photoseek.indexing.pipeline import FailedFile, IndexProgress, IndexSummary, ProgressCallback
from photoseek.photo_metadata import PhotoMetadata
from photoseek.query import QueryTerm
from photoseek.results import Duplicates, SearchResult

if TYPE_CHECKING:
    from photoseek.store.filters import SearchFilter


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


class RemoteEngine:
    """The parts of ImageSearchEngine the CLI uses, over a running server's HTTP API."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, transport: Any = None):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)

    @classmethod
    def over_socket(cls, socket_path: str, token: str | None = None, timeout: float = 60.0) -> RemoteEngine:
        """Through the local channel's Unix socket (the token, if any, goes nowhere else)."""
        import httpx

        return cls("http://localhost", token, timeout, transport=httpx.HTTPTransport(uds=socket_path))

    def _call(self, method: str, route: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, route, **kwargs)
        except httpx.HTTPError as error:
            raise StoreError(f"the photoseek server at {self.url} did not answer: {error}") from None
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code == 401:
            raise InvalidArgumentError(f"the server at {self.url} needs a token: pass --token or set PHOTOSEEK_TOKEN")
        if response.status_code >= 400:
            message = body.get("error") or json.dumps(body.get("detail", response.text))
            raise (InvalidArgumentError if response.status_code < 500 else RemoteServerError)(f"server: {message}")
        return body

    @staticmethod
    def _results(items: Any) -> list[SearchResult]:
        """Results as the server sent them, each field checked for its type (a server's answer is input)."""
        try:
            return [SearchResult(rank=int(r["rank"]), path=_text(r["path"]), score=_finite(r["score"]),
                                 description=_text(r.get("description") or ""), id=int(r["id"]), size=int(r.get("size") or 0),
                                 mtime=_finite(r.get("mtime") or 0.0), query_encoder=_text(r.get("query_encoder") or ""),
                                 metadata=PhotoMetadata(**r["metadata"]) if isinstance(r.get("metadata"), dict) else None,
                                 matched_words=tuple(_text(w) for w in r.get("matched_words") or ()),
                                 matched_in=tuple(_text(w) for w in r.get("matched_in") or ())) for r in items]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise RemoteServerError(f"the photoseek server answered results of the wrong shape: {error}") from None

    @staticmethod
    def _filter_fields(search_filter: SearchFilter | None) -> dict[str, Any]:
        """A filter as the API's fields (folder, ext, modified_after, modified_before), empty ones left out."""
        if search_filter is None:
            return {}
        def seconds(value: float | None) -> str | None:
            return None if value is None else repr(float(value))

        fields: dict[str, Any] = {"folder": search_filter.path_prefix, "ext": list(search_filter.extensions) or None,
                                  "modified_after": seconds(search_filter.modified_after),
                                  "modified_before": seconds(search_filter.modified_before),
                                  "taken_after": _wall_clock(search_filter.taken_after),
                                  "taken_before": _wall_clock(search_filter.taken_before), "camera": search_filter.camera,
                                  "near": None if search_filter.near is None else
                                  f"{search_filter.near.latitude!r},{search_filter.near.longitude!r},{search_filter.near.km!r}",
                                  "min_width": search_filter.min_width}
        return {name: value for name, value in fields.items() if value is not None}

    def search(self, query: str, top_k: int = 5, search_filter: SearchFilter | None = None) -> list[SearchResult]:
        return self.search_batch([query], top_k, search_filter)[0]

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
        from photoseek.store.records import path_id

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
        from photoseek.store.records import path_id

        return self._results(self._call("GET", f"/api/similar/{path_id(os.path.abspath(image))}",
                                        params={"top_k": top_k, **self._filter_fields(search_filter)})["results"])

    def find_duplicates(self, similarity: float = DEFAULT_SIMILARITY, max_hash_distance: int = DEFAULT_MAX_HASH_DISTANCE,
                        search_filter: SearchFilter | None = None) -> Duplicates:
        body = self._call("GET", "/api/duplicates", params={"similarity": similarity, "max_hash_distance": max_hash_distance,
                                                            **self._filter_fields(search_filter)})
        return Duplicates([self._results(group) for group in body["groups"]], body["photos_compared"], body["without_hash"],
                          int(body.get("pairs_checked", 0)), int(body.get("unreadable", 0)))

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


def _wall_clock(seconds: float | None) -> str | None:
    """Wall-clock seconds as the ISO date-time the API parses back to the same value."""
    if seconds is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None).isoformat()
