"""The typed seams between the parts: what the CLI, the HTTP layer and the index jobs need of an engine.

`ImageSearchEngine` (in process) and `RemoteEngine` (a running server's API) both are a `SearchEngine`;
the HTTP server needs a `ServedEngine`, which only the in-process engine is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from photoseek.indexing.pipeline import IndexSummary, ProgressCallback
    from photoseek.query import QueryTerm
    from photoseek.results import Duplicates, SearchResult
    from photoseek.store.filters import SearchFilter
    from photoseek.store.milvus import MilvusStore


class SearchEngine(Protocol):
    """Index folders and search them: what the command line uses."""

    def index_directory(self, image_dir: str, descriptions: Mapping[str, Any] | None = None,
                        progress: ProgressCallback | None = None, *, exclude: Sequence[str] = ()) -> IndexSummary: ...

    def search_batch(self, queries: Sequence[str], top_k: int = 5,
                     search_filter: SearchFilter | None = None) -> list[list[SearchResult]]: ...

    def search_by_image(self, image: str, top_k: int = 5, search_filter: SearchFilter | None = None) -> list[SearchResult]: ...

    def search_composed(self, terms: Sequence[QueryTerm], top_k: int = 5,
                        search_filter: SearchFilter | None = None) -> list[SearchResult]: ...

    def similar(self, image: str, top_k: int = 5, search_filter: SearchFilter | None = None) -> list[SearchResult]: ...

    def find_duplicates(self, similarity: float = ..., max_hash_distance: int = ...,
                        search_filter: SearchFilter | None = None) -> Duplicates: ...

    def get_stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class ServedEngine(SearchEngine, Protocol):
    """What the HTTP server needs besides: filters, raw uploads, records by id, its store, warming up."""

    store: MilvusStore
    model_name: str

    def search(self, query: str, top_k: int = 5, search_filter: SearchFilter | None = None) -> list[SearchResult]: ...

    def search_batch(self, queries: Sequence[str], top_k: int = 5,
                     search_filter: SearchFilter | None = None) -> list[list[SearchResult]]: ...

    def search_by_image(self, image: str | bytes, top_k: int = 5,
                        search_filter: SearchFilter | None = None) -> list[SearchResult]: ...

    def search_composed(self, terms: Sequence[QueryTerm], top_k: int = 5,
                        search_filter: SearchFilter | None = None) -> list[SearchResult]: ...

    def similar(self, image: str | int, top_k: int = 5,
                search_filter: SearchFilter | None = None) -> list[SearchResult]: ...

    def index_directory(self, image_dir: str, descriptions: Mapping[str, Any] | None = None,
                        progress: ProgressCallback | None = None, *, within: Sequence[str] = (),
                        exclude: Sequence[str] = ()) -> IndexSummary: ...

    def find_duplicates(self, similarity: float = ..., max_hash_distance: int = ...,
                        search_filter: SearchFilter | None = None, within: Sequence[str] = ()) -> Duplicates: ...

    def image_record(self, image_id: int) -> dict[str, Any] | None: ...

    def warm(self) -> None: ...
