"""One ranking for a query: photos the query names by their words first, then the picture decides.

CLIP cannot read a name ("Alice", "外婆家", a folder called "2019-06 Kyoto"), and a description can say what no
picture shows. But most words people type are words CLIP reads ("a red circle"), and a photo whose description
merely shares one of them is no better a match. So words never add to a score; they decide one thing: whether
the query *names* a photo.

A photo's words come in parts: its description, its folder, the folder above, its file name (see
imsearch/store/words.py). A part counts unless CLIP already sees it in the photo: a description or a file name
is encoded and compared with the photo's vector against a fixed sample of the collection's photos, and at
CONFIRM_Z standard deviations above their mean it describes what the picture shows, so CLIP's own ranking
answers for it (measured on 500 unseen scenes: every scene's own caption at z >= 1.96, the photo of a name
such as "Zoe" or "外婆家" at z >= 1.75 for 0-8 % of photos). Folder names group photos and always count; so does
a part the query repeats word for word. A description CLIP cannot see in its photo is taken at its word.

The query names a photo when its counting parts hold every unit of the query; or when one of them is named in
full by the query (all its units are in the query, dates and counters aside: "Kyoto red circle" names the folder
"2019-06 Kyoto", "Alice red circle" the description "Alice"); or when they hold some of the query's units and
CLIP sees the whole query in the picture ("Alice on the swing" names the photo described "Alice at the park"
that shows a swing, not the one described "Dinner at the Red Lion" for "a red car").

The order: named photos first, those holding more of the query's units before others, each by the similarity of
the photo to what is left of the query once the naming words are taken out ("red circle" of "Kyoto red circle");
then every other photo by that same similarity; ties by id. The score shown is that similarity. The named set is
read from a fixed number of word candidates, so the first k results are the same list for every top-k >= k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imsearch.store.words import is_number, query_units, searchable_units, text_parts, units, without_units

if TYPE_CHECKING:
    from milvus_store import Hit, MilvusStore, SearchFilter

WORD_CANDIDATES = 1024  # rows read from the words' ranking per query: the named photos come from these
CONFIRM_Z = 1.75
CONFIRM_SAMPLE = 256  # photos the confirmation compares with
CONFIRM_TEXTS = 256  # distinct texts encoded per query for the confirmation; beyond them a part is taken at its word
MAX_SEARCH_LIMIT = 16_384  # Milvus' largest top-k
FOLDERS = ("folder", "parent folder")

TextEncoder = Callable[[list[str]], np.ndarray]  # unit vectors, one per text


@dataclass(frozen=True)
class Ranked:
    hit: Hit
    matched_words: tuple[str, ...] = ()  # the query's words this photo is named by, as typed
    matched_in: tuple[str, ...] = ()  # where they were found: description, folder, parent folder, file name


class WordRanking:
    """Searches by picture and words (see the module's description). `encode` turns texts into unit vectors in
    the collection's space (the query's encoder, multilingual routing included)."""

    def __init__(self, store: MilvusStore, encode: TextEncoder):
        self.store = store
        self.encode = encode

    def search(self, query: str, vector: np.ndarray, top_k: int, search_filter: SearchFilter | None = None) -> list[Ranked]:
        typed = query_units(query)
        wanted = {u.unit for u in typed}
        candidates = self.store.word_candidates(" ".join(u.unit for u in typed), WORD_CANDIDATES, search_filter) if wanted else []
        possible = _matched_parts(wanted, candidates)
        rows = {int(row["id"]): row for row in self.store.get(list(possible), with_vectors=True)} if possible else {}
        possible = {image_id: matched for image_id, matched in possible.items() if image_id in rows}
        # folder names group photos and are taken as labels; a description or a file name speaks of one photo
        seen = self._seen_by_clip([(image_id, text) for image_id, matched in possible.items()
                                   for name, text in matched.items() if name not in FOLDERS], rows)
        named: dict[int, tuple[set[str], list[str]]] = {}
        partly: dict[int, tuple[set[str], list[str]]] = {}
        for image_id, matched in possible.items():
            # a part counts where CLIP does not see it in its photo, or where the query repeats it word for word
            parts = {name: text for name, text in matched.items() if (image_id, text) not in seen or _own_units(text) == wanted}
            held = wanted & set().union(set(), *(searchable_units(text) for text in parts.values()))
            if not held:
                continue
            if held == wanted or any((own := _own_units(text)) and own <= wanted for text in parts.values()):
                named[image_id] = (held, list(parts))
            else:
                partly[image_id] = (held, list(parts))
        if partly:  # named by part of the query: only where the picture shows what the query asks (CLIP sees it)
            shown = self._seen_by_clip([(image_id, query) for image_id in partly], rows)
            named.update({image_id: found for image_id, found in partly.items() if (image_id, query) in shown})
        if not named:
            return [Ranked(hit) for hit in self.store.search(vector[None], top_k, search_filter)[0]]
        naming = set().union(*(held for held, _ in named.values()))
        rest = without_units(query, naming)
        visual = vector if not units(rest) or rest == query else self.encode([rest])[0]
        first = []
        for image_id, (held, where) in named.items():
            row = rows[image_id]
            score = float(np.dot(visual, np.asarray(row["vector"], dtype=np.float32)))
            fields = {k: v for k, v in row.items() if k not in ("vector", "id", "fingerprint")}
            words = tuple(dict.fromkeys(query[u.start : u.end] for u in typed if u.unit in held))
            first.append((-len(held), -score, image_id, Ranked(_hit(image_id, score, fields), words, tuple(where))))
        first.sort(key=lambda entry: entry[:3])
        ranked = [entry[3] for entry in first[:top_k]]
        if len(ranked) < top_k:
            others = self.store.search(visual[None], min(top_k + len(named), MAX_SEARCH_LIMIT), search_filter)[0]
            ranked += [Ranked(hit) for hit in others if hit.id not in named][: top_k - len(ranked)]
        return ranked

    def _seen_by_clip(self, pairs: list[tuple[int, str]], rows: dict[int, dict[str, Any]]) -> set[tuple[int, str]]:
        """The (photo, text) pairs where CLIP sees the text in the photo: the photo's similarity to the text is at
        least CONFIRM_Z standard deviations above the sample's (CONFIRM_TEXTS distinct texts at most)."""
        texts = list(dict.fromkeys(text for _, text in pairs if units(text)))[:CONFIRM_TEXTS]
        if not texts:
            return set()
        sample = self.store.sample_vectors(CONFIRM_SAMPLE)
        if len(sample) < 2:
            return set()
        text_vectors = self.encode(texts)
        sample_scores = sample @ text_vectors.T
        mean, spread = sample_scores.mean(axis=0), np.maximum(sample_scores.std(axis=0), 1e-6)
        column = {text: i for i, text in enumerate(texts)}
        seen = set()
        for image_id, text in pairs:
            i = column.get(text)
            if i is not None:
                score = float(np.asarray(rows[image_id]["vector"], dtype=np.float32) @ text_vectors[i])
                if (score - mean[i]) / spread[i] >= CONFIRM_Z:
                    seen.add((image_id, text))
        return seen


def _matched_parts(wanted: set[str], candidates: Sequence[dict[str, Any]]) -> dict[int, dict[str, str]]:
    """Each candidate's parts of text that hold some of the query's units."""
    possible = {}
    for row in candidates:
        parts = text_parts(str(row["path"]), str(row.get("description") or ""))
        matched = {name: text for name, text in parts.items() if wanted & searchable_units(text)}
        if matched:
            possible[int(row["id"])] = matched
    return possible


def _own_units(text: str) -> set[str]:
    """A part's units that a query naming it must hold: all but dates and counters."""
    return {u for u in units(text) if not is_number(u)}


def _hit(image_id: int, score: float, fields: dict[str, object]) -> Hit:
    from milvus_store import Hit

    return Hit(image_id, score, fields)
