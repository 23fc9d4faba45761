"""What a search returns, and how a person reads it."""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from photoseek.photo_metadata import PhotoMetadata


@dataclass(frozen=True)
class SearchResult:
    rank: int  # 1-based
    path: str  # absolute
    score: float  # cosine similarity, higher is closer
    description: str = ""
    id: int = 0
    size: int = 0
    mtime: float = 0.0
    query_encoder: str = ""  # the text encoder that answered (the model's own or a multilingual one)
    metadata: PhotoMetadata | None = None  # what the photo's header said (None: not read, e.g. indexed before it was kept)
    # The query's words this photo is named by (its description, folder or file name holds them), as typed, and
    # where they were found. Such results come first; `score` is then the similarity to the rest of the query.
    matched_words: tuple[str, ...] = ()
    matched_in: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Duplicates:
    """Groups of copies of one picture (confirmed pixel by pixel), best copy first in each (its score: cosine
    similarity to the best)."""

    groups: list[list[SearchResult]]
    photos_compared: int = 0
    without_hash: int = 0  # photos indexed before perceptual hashes were kept: index once more to include them
    pairs_checked: int = 0  # look-alike pairs compared pixel by pixel
    unreadable: int = 0  # look-alike pairs left out: a file gone, changed since it was indexed, or unreadable

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [[r.to_dict() for r in group] for group in self.groups], "photos_compared": self.photos_compared,
                "without_hash": self.without_hash, "pairs_checked": self.pairs_checked, "unreadable": self.unreadable}


# C0 and C1 controls, DEL, and the bidirectional overrides and isolates: legal in Linux file names and
# descriptions, and able to rewrite a terminal or reorder what a person reads
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control character written as an escape (`\x1b`, `\n`, `\u202e`), so that a path
    or a description shows what it holds and cannot act on the terminal; `\\` is doubled, so nothing reads back
    as another escape."""
    def escape(match: re.Match[str]) -> str:
        character = match.group(0)
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(character)
        if named:
            return named
        code = ord(character)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNPRINTABLE.sub(escape, text.replace("\\", "\\\\"))


def format_duplicates(found: Duplicates) -> str:
    if not found.groups:
        return f"no duplicates among {found.photos_compared} photos"
    lines = [f"{len(found.groups)} groups of copies among {found.photos_compared} photos, each checked pixel by pixel "
             f"(best copy first):"]
    for number, group in enumerate(found.groups, 1):
        lines.append(f"group {number} ({len(group)} photos)")
        for position, result in enumerate(group):
            size = f"{result.metadata.width}x{result.metadata.height}" if result.metadata and result.metadata.width else ""
            lines.append(f"  {'keep' if position == 0 else '    '}  {result.score:.3f}  {size:>11}  {printable(result.path)}")
    return "\n".join(lines)


def format_results(results: list[SearchResult]) -> str:
    if not results:
        return "no results"
    lines = []
    if any(r.matched_words for r in results):
        lines.append("photos your words name come first (marked \"words:\"), then the rest; each group by similarity")
    for result in results:
        line = f"{result.rank:>3}. {result.score:.4f}  {printable(result.path)}"
        if result.matched_words:
            line += f"\n       words: {printable(', '.join(result.matched_words))} (in its {printable(' and '.join(result.matched_in))})"
        if result.description:
            line += f"\n       {printable(result.description)}"
        about = describe_metadata(result.metadata)
        if about:
            line += f"\n       {printable(about)}"
        lines.append(line)
    return "\n".join(lines)


def print_results(results: list[SearchResult], file: TextIO | None = None) -> None:
    """Print ranked results for a person (the spec's convenience helper)."""
    print(format_results(results), file=file or sys.stdout)


def describe_metadata(metadata: PhotoMetadata | None) -> str:
    """One line a person reads: "2019-06-14 17:03 +09:00 · Canon EOS 5D · 35.0100, 135.7700 · 6000x4000"."""
    if metadata is None:
        return ""
    parts = []
    if metadata.taken is not None:
        from datetime import datetime, timezone

        when = datetime.fromtimestamp(metadata.taken, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
        if metadata.taken_offset_minutes is not None:
            sign = "+" if metadata.taken_offset_minutes >= 0 else "-"
            hours, minutes = divmod(abs(metadata.taken_offset_minutes), 60)
            when += f" {sign}{hours:02d}:{minutes:02d}"
        parts.append(when)
    if metadata.camera:
        parts.append(metadata.camera + (f", {metadata.lens}" if metadata.lens else ""))
    if metadata.latitude is not None and metadata.longitude is not None:
        parts.append(f"{metadata.latitude:.4f}, {metadata.longitude:.4f}")
    if metadata.width and metadata.height:
        parts.append(f"{metadata.width}x{metadata.height}")
    return " · ".join(parts)
