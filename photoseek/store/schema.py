"""The collection's schema and record: version, vector index and metric, consistency levels, what a
collection records of the model that filled it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# 2: photo metadata (date taken, camera, lens, position, size as seen, orientation). A version 1
# collection is searched as it is and upgraded by the next index run: its rows are copied into the new
# schema (vectors kept), then the run reads each file's header to fill the metadata.
SCHEMA_VERSION = 2


READABLE_SCHEMAS = (1, 2)


UPGRADE_SUFFIX = "__upgrade"


# Exact search on both stores: an approximate index returned fewer than k rows and rankings that moved
# with filters (HNSW at 20,000 x 512 clustered vectors: recall@10 0.32 at ef 64, 0.94 at k=1000 even with
# ef 4,000), while FLAT answers 20,000 rows in ~6 ms on a server. Milvus Lite 3.x walks every row anyway.
VECTOR_INDEX = "FLAT"


VECTOR_METRIC = "COSINE"  # on unit vectors: the inner product, as a score from -1 to 1


META_PROPERTY = "image_search.meta"


DEFAULT_COLLECTION = "image_search"


# Rows written by this process are visible to its next search (Lite ignores the level).
SEARCH_CONSISTENCY = "Session"


# Index bookkeeping must see every committed write, whoever made it.
STATE_CONSISTENCY = "Strong"


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model: str
    dim: int
    schema_version: int
    # How the model that filled it was built (activation, preprocessing); None for a collection made
    # before photoseek recorded it (see ImageSearchEngine's check of its activation).
    build: dict[str, Any] | None = None
    # whether its words (descriptions, file and folder names) are searchable with BM25 (Milvus Lite 3.x,
    # Milvus servers from 2.5; a 2.3 or 2.4 server has no full-text search)
    text_match: bool = False


def has_text_match(server_version: str) -> bool:
    """Whether a Milvus server of this version ("v2.5.4", "2.3.5") has full-text search: from 2.5 on."""
    numbers = [int(n) for n in re.findall(r"\d+", server_version)[:2]]
    return len(numbers) == 2 and tuple(numbers) >= (2, 5)
