"""The in-memory copy of a Lite collection's vectors, against an exact search written here, through growth
past its first capacity (1,024 rows) and compaction (past 4,096 rows with a quarter deleted)."""

from __future__ import annotations

import numpy as np

from photoseek.store.vector_cache import VectorCache


def _rows(ids: range | list[int], rng: np.random.Generator, dim: int) -> list[dict[str, object]]:
    # lengths from 0.05 to 3: the copy must normalise short vectors as well as long ones
    return [{"id": i, "vector": rng.normal(size=dim).astype(np.float32) / np.sqrt(dim) * rng.uniform(0.05, 3),
             "path": f"/p/{i}.jpg", "fingerprint": "f", "text": "words", "size": i} for i in ids]


def _exact(live: dict[int, np.ndarray], query: np.ndarray, k: int) -> list[int]:
    ids = sorted(live)
    matrix = np.stack([live[i] / np.linalg.norm(live[i]) for i in ids])
    scores = matrix @ query
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def test_cache_equals_exact_search_through_growth_updates_deletes_and_compaction() -> None:
    rng = np.random.default_rng(5)
    dim = 16
    cache = VectorCache(dim)
    live: dict[int, np.ndarray] = {}

    def write(rows: list[dict[str, object]]) -> None:
        cache.upsert(rows)
        live.update({int(r["id"]): np.asarray(r["vector"], dtype=np.float32) for r in rows})  # type: ignore[call-overload]

    def check() -> None:
        assert len(cache) == len(live)
        queries = rng.normal(size=(3, dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        for k in (1, 2, 50):  # k=1 and 2: the partition's edge
            for query, hits in zip(queries, cache.search(queries, k), strict=True):
                assert [h[0] for h in hits] == _exact(live, query, k)
                # the fields a search returns, as Milvus's would: not the vector, id, fingerprint or words
                assert all(h[2] == {"path": f"/p/{h[0]}.jpg", "size": h[0]} for h in hits)
                scores = [h[1] for h in hits]
                assert scores == sorted(scores, reverse=True) and max(scores) <= 1.0 + 1e-5

    write(_rows(range(0, 1000), rng, dim))
    check()
    write(_rows(range(1000, 5000), rng, dim))  # grows to 1,024, 2,048, 4,096 and 8,192 rows
    check()
    write(_rows(range(0, 1500), rng, dim))  # updates: the old copies must not answer
    check()
    gone = [int(i) for i in rng.choice(5000, size=2000, replace=False)]
    cache.delete(gone)
    for i in gone:
        live.pop(i)
    check()
    write(_rows(range(5000, 5100), rng, dim))  # the next write compacts (6,600 slots, 3,100 live)
    assert cache._size == len(live)  # compacted: no dead slots left
    check()
    everything = cache.search(np.eye(dim, dtype=np.float32)[:1], len(live) + 10)[0]
    assert {h[0] for h in everything} == set(live)  # more than there is: all of it, once each, best first
    assert [h[1] for h in everything] == sorted((h[1] for h in everything), reverse=True)
    write(_rows(range(0, 10), rng, dim))
    check()


def test_real_ids_survive_compaction_and_unknown_deletes_are_no_ops() -> None:
    """Ids are 63-bit path hashes: they must come back exact after compaction (a float64 id column would
    round them), and deleting ids the cache never held (rows written before it was filled) does nothing."""
    rng = np.random.default_rng(9)
    dim = 8
    cache = VectorCache(dim)
    big = [int(x) for x in rng.integers(2**62, 2**63 - 1, size=5000, dtype=np.int64)]
    cache.upsert(_rows(big, rng, dim))
    cache.delete(big[:2000])
    cache.delete([123, 456])  # never held
    extra = 2**63 - 25
    cache.upsert(_rows([extra], rng, dim))  # the next write compacts: over 4,096 rows, a quarter deleted
    assert len(cache) == 3001
    query = rng.normal(size=dim).astype(np.float32)
    query /= np.linalg.norm(query)
    found = [hit[0] for hit in cache.search(query[None], 3001)[0]]
    assert sorted(found) == sorted(big[2000:] + [extra])  # every id exactly as written


def test_an_empty_copy_answers_each_query_with_nothing() -> None:
    cache = VectorCache(4)
    queries = np.eye(4, dtype=np.float32)[:3]
    assert cache.search(queries, 5) == [[], [], []]
    cache.upsert([{"id": 1, "vector": [1.0, 0, 0, 0], "path": "/p/1.jpg"}])
    cache.delete([1])
    assert cache.search(queries, 5) == [[], [], []]
    assert cache.search(queries[:1], 0) == [[]]
