"""One ranking for a query: photos the query names by their words first, then the picture decides.

CLIP cannot read a name ("Alice", "外婆家", a folder called "2019-06 Kyoto"), and a description can say what no
picture shows. But most words people type are words CLIP reads ("a red circle"), and a photo whose description
merely shares one of them is no better a match. So words never add to a score; they decide one thing: whether
the query *names* a photo.

A photo's words come in parts: its description, its folder, the folder above, its file name (see
photoseek/store/words.py). A part counts unless CLIP already sees it in the photo: a description or a file name
is encoded and compared with the photo's vector against a fixed sample of the collection's photos, and at
CONFIRM_Z standard deviations above their mean it describes what the picture shows, so CLIP's own ranking
answers for it (measured on 500 unseen scenes: every scene's own caption at z >= 1.96, the photo of a name
such as "Zoe" or "外婆家" at z >= 1.75 for 0-8 % of photos). Folder names group photos and always count; so does
a part the query repeats word for word. A description CLIP cannot see in its photo is taken at its word.

The query names a photo when its counting parts hold every unit of the query; or when one of them is named in
full by the query (all its units are in the query, dates and counters aside: "Kyoto red circle" names the folder
"2019-06 Kyoto", "Alice red circle" the description "Alice"); or when they hold some of the query's units, CLIP
sees the whole query in the picture and does not see those words in it ("Alice on the swing" names the photo
described "Alice at the park" that shows a swing; "a red car" does not name a red car photo described
"Dinner at the Red Lion": its words add nothing CLIP does not see).

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

from photoseek.store.words import is_number, query_units, searchable_units, text_parts, units, without_units

if TYPE_CHECKING:
    from photoseek.store.filters import SearchFilter
    from photoseek.store.milvus import MilvusStore
    from photoseek.store.records import Hit

SCORE_TIE = 1e-5  # as the store's searches: scores this close are a tie, decided by id

WORD_CANDIDATES = 1024  # rows read from the words' ranking per query: the named photos come from these
CONFIRM_Z = 1.75
# a photo whose words hold part of the query: the picture must show the whole query at least this clearly (bench/
# relevance.py, 300 scenes: at 1.75 wrong captions sharing a word with a query cost R@1 0.53 -> 0.38, at 2.0 0.41,
# at 2.5 0.44 but "Alice" + a caption no longer found Alice's photos described with more words; 2.0 finds them)
PARTIAL_Z = 2.0
CONFIRM_SAMPLE = 256  # photos the confirmation compares with
CONFIRM_TEXTS = 256  # distinct texts encoded per query for the confirmation; beyond them a part is taken at its word
MAX_SEARCH_LIMIT = 16_384  # Milvus' largest top-k
TEXTS_KEPT = 4096  # encoded texts a warm process keeps
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
        self._texts: dict[str, np.ndarray] = {}  # descriptions and names already encoded (a warm process asks again)

    def search(self, query: str, vector: np.ndarray, top_k: int, search_filter: SearchFilter | None = None) -> list[Ranked]:
        typed = query_units(query)
        wanted = {u.unit for u in typed}
        candidates = self.store.word_candidates(" ".join(u.unit for u in typed), WORD_CANDIDATES, search_filter) if wanted else []
        possible = _matched_parts(wanted, candidates)
        rows = {int(row["id"]): row for row in self.store.get(list(possible), with_vectors=True)} if possible else {}
        possible = {image_id: matched for image_id, matched in possible.items() if image_id in rows}
        # does the picture show what the whole query asks? (needed where the photo's words hold only part of it)
        shows_query = self._shown(vector[None], [rows[i] for i in possible], PARTIAL_Z) if possible else {}
        # only parts that could name their photo are checked against it (each check encodes a text)
        checked = [image_id for image_id, matched in possible.items()
                   if (found := _naming(wanted, matched)) is not None and (found[1] or shows_query[image_id])]
        # folder names group photos and are taken as labels; a description or a file name speaks of one photo
        seen = self._seen_by_clip([(image_id, text) for image_id in checked
                                   for name, text in possible[image_id].items() if name not in FOLDERS], rows)
        named: dict[int, tuple[set[str], list[str]]] = {}
        partly: dict[int, tuple[set[str], list[str], str]] = {}
        for image_id in checked:
            # a part counts where CLIP does not see it in its photo, or where the query repeats it word for word
            parts = {name: text for name, text in possible[image_id].items()
                     if (image_id, text) not in seen or _own_units(text) == wanted}
            found = _naming(wanted, parts)
            if found is not None and found[1]:
                named[image_id] = (found[0], list(parts))
            elif found is not None and shows_query[image_id]:
                partly[image_id] = (found[0], list(parts), " ".join(query[u.start : u.end] for u in typed if u.unit in found[0]))
        # by part of the query, where the picture shows the whole query and its words say what CLIP cannot see:
        # "Alice" in "Alice on the swing", not "red" in "a red car" (a red photo is found by CLIP alone)
        visible = self._seen_by_clip([(image_id, held_words) for image_id, (_, _, held_words) in partly.items()], rows)
        named.update({image_id: (held, parts) for image_id, (held, parts, held_words) in partly.items()
                      if (image_id, held_words) not in visible})
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
            first.append((-len(held), -round(score / SCORE_TIE), image_id, Ranked(_hit(image_id, score, fields), words, tuple(where))))
        first.sort(key=lambda entry: entry[:3])
        ranked = [entry[3] for entry in first[:top_k]]
        if len(ranked) < top_k:
            others = self.store.search(visual[None], min(top_k + len(named), MAX_SEARCH_LIMIT), search_filter)[0]
            ranked += [Ranked(hit) for hit in others if hit.id not in named][: top_k - len(ranked)]
        return ranked

    def _seen_by_clip(self, pairs: list[tuple[int, str]], rows: dict[int, dict[str, Any]]) -> set[tuple[int, str]]:
        """The (photo, text) pairs where CLIP sees the text in the photo (CONFIRM_TEXTS distinct texts at most)."""
        texts = list(dict.fromkeys(text for _, text in pairs if units(text)))[:CONFIRM_TEXTS]
        if not texts:
            return set()
        missing = [text for text in texts if text not in self._texts]
        if missing:
            if len(self._texts) + len(missing) > TEXTS_KEPT:
                self._texts.clear()
            self._texts.update(zip(missing, self.encode(missing), strict=True))
        by_text: dict[str, list[int]] = {}
        for image_id, text in pairs:
            if text in self._texts:
                by_text.setdefault(text, []).append(image_id)
        seen: set[tuple[int, str]] = set()
        for text, ids in by_text.items():
            shown = self._shown(self._texts[text][None], [rows[i] for i in ids])
            seen.update((image_id, text) for image_id, yes in shown.items() if yes)
        return seen

    def _shown(self, text_vector: np.ndarray, rows: list[dict[str, Any]], threshold: float = CONFIRM_Z) -> dict[int, bool]:
        """For each photo, whether CLIP sees the text in it: the photo's similarity to the text is at least
        CONFIRM_Z standard deviations above the sample's (a fixed sample of the collection, by id)."""
        sample = self.store.sample_vectors(CONFIRM_SAMPLE)
        if len(sample) < 2:
            return {int(row["id"]): False for row in rows}
        reference = sample @ text_vector[0]
        mean, spread = float(reference.mean()), max(float(reference.std()), 1e-6)
        vectors = np.asarray([row["vector"] for row in rows], dtype=np.float32).reshape(len(rows), -1)
        scores = vectors @ text_vector[0]
        return {int(row["id"]): bool((score - mean) / spread >= threshold) for row, score in zip(rows, scores, strict=True)}


def _matched_parts(wanted: set[str], candidates: Sequence[dict[str, Any]]) -> dict[int, dict[str, str]]:
    """Each candidate's parts of text that hold some of the query's units."""
    possible = {}
    for row in candidates:
        parts = text_parts(str(row["path"]), str(row.get("description") or ""))
        matched = {name: text for name, text in parts.items() if wanted & searchable_units(text)}
        if matched:
            possible[int(row["id"])] = matched
    return possible


def _naming(wanted: set[str], parts: dict[str, str]) -> tuple[set[str], bool] | None:
    """The query's units these parts of a photo's text hold, and whether they name it outright (hold every unit,
    or one part is named in full by the query); None when they hold none."""
    held = wanted & set().union(set(), *(searchable_units(text) for text in parts.values()))
    if not held:
        return None
    return held, held == wanted or any((own := _own_units(text)) and own <= wanted for text in parts.values())


def _own_units(text: str) -> set[str]:
    """A part's units that a query naming it must hold: all but dates and counters."""
    return {u for u in units(text) if not is_number(u)}


def _hit(image_id: int, score: float, fields: dict[str, object]) -> Hit:
    from photoseek.store.records import Hit

    return Hit(image_id, score, fields)
