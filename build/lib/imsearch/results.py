"""What a search returns, and how a person reads it."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any, TextIO


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_results(results: list[SearchResult]) -> str:
    if not results:
        return "no results"
    lines = []
    for result in results:
        line = f"{result.rank:>3}. {result.score:.4f}  {result.path}"
        if result.description:
            line += f"\n       {result.description}"
        lines.append(line)
    return "\n".join(lines)


def print_results(results: list[SearchResult], file: TextIO | None = None) -> None:
    """Print ranked results for a person (the spec's convenience helper)."""
    print(format_results(results), file=file or sys.stdout)
