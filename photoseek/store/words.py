"""The words a photo is found by, and the words of a query, as the word matching sees them.

A photo's words are its description, its file name and the names of the two folders above it (higher
folders, such as /home or Pictures, name every photo). Milvus's BM25 analyzer (standard tokenizer,
lower case, our stop words) indexes them as `words_for_matching` writes them: Chinese, Japanese and
Korean runs spread into characters and character pairs, so that words inside them match without a
dictionary segmenter (jieba costs a one-shot search 0.43 s to load).

For deciding whether a query names a photo (engine/ranking.py), both sides are compared as *units*:
Latin words (lower case, stop words out) and, inside a CJK run, its character pairs (a lone character
stands for itself). A query unit is found in a photo when the photo's text holds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

# Words that name every photo or no particular one: a query's "a photo of" must not rank photos by them.
STOP_WORDS = frozenset("a an and are as at be but by for from has have in is it its of on or that the this to was were with "
                       "photo photos picture pictures image images img dsc pxl jpg jpeg png heic heif tif tiff webp".split())
DATE_CHARACTERS = frozenset("年月日号")  # 2019年6月3日: the characters of a written date, alone after its numbers
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")
_WORD = re.compile(r"\w+")


def words_for_matching(text: str) -> str:
    """Text as the BM25 analyzer should see it: CJK runs written as their characters and character pairs
    ("外婆家" -> "外 婆 家 外婆 婆家"); path separators and underscores become spaces. Used for stored text
    and queries alike."""
    def spread(match: re.Match[str]) -> str:
        run = match.group(0)
        return " " + " ".join([*run, *(run[i : i + 2] for i in range(len(run) - 1))]) + " "

    return CJK.sub(spread, _separators(text))


def _separators(text: str) -> str:
    return text.replace("/", " ").replace("\\", " ").replace("_", " ")


def text_parts(path: str, description: str) -> dict[str, str]:
    """A photo's text by part: its description, the folder holding it, the folder above, its file name."""
    location = PurePath(path)
    folders = location.parent.parts[-2:]
    return {"description": description or "", "folder": folders[-1] if folders else "",
            "parent folder": folders[0] if len(folders) == 2 else "", "file name": location.stem}


def indexed_text(path: str, description: str) -> str:
    """The text the store indexes for a photo (its BM25 field, before the byte limit)."""
    location = PurePath(path)
    return words_for_matching(" ".join([description or "", *location.parent.parts[-2:], location.stem]))


@dataclass(frozen=True)
class QueryUnit:
    unit: str  # as compared: lower case; a CJK character pair or lone character
    start: int  # where it is in the query as typed
    end: int


def query_units(query: str) -> list[QueryUnit]:
    """The units of a query, in order, stop words out (each unit once, at its first place)."""
    found: dict[str, QueryUnit] = {}
    text = _separators(query)
    for match in _WORD.finditer(text):
        start = match.start()
        for piece in re.split(f"({CJK.pattern})", match.group(0)):
            if CJK.fullmatch(piece):
                pairs = [(piece, 0)] if len(piece) == 1 else [(piece[i : i + 2], i) for i in range(len(piece) - 1)]
                for unit, offset in pairs:
                    found.setdefault(unit, QueryUnit(unit, start + offset, start + offset + len(unit)))
            elif piece and piece.lower() not in STOP_WORDS:
                found.setdefault(piece.lower(), QueryUnit(piece.lower(), start, start + len(piece)))
            start += len(piece)
    return list(found.values())


def units(text: str) -> frozenset[str]:
    """The units of a text written the way a query's are (a folder name, a description)."""
    return frozenset(u.unit for u in query_units(text))


def searchable_units(text: str) -> frozenset[str]:
    """Every unit a query can find in this text: its units, and each CJK character alone (a one-character
    query finds it inside a longer run, as the index does)."""
    return units(text) | frozenset(character for run in CJK.findall(text) for character in run)


def without_units(query: str, removed: set[str]) -> str:
    """The query with the places of the given units taken out: what is left for the picture to match
    ("Kyoto red circle" without "kyoto" -> "red circle")."""
    cut = [False] * len(query)
    for unit in query_units(query):
        if unit.unit in removed:
            for i in range(unit.start, unit.end):
                cut[i] = True
    return " ".join("".join(c for c, gone in zip(query, cut, strict=True) if not gone).split())


def is_number(unit: str) -> bool:
    """Dates and counters in folder and file names ("2019-06 Kyoto", "IMG_0042", "2019年6月 京都") say nothing a
    query must repeat."""
    return unit.isdigit() or unit in DATE_CHARACTERS
