"""open_clip's CLIP BPE tokenizer without torch: the same algorithm, the same vocabulary file, the same
cleaning, returning numpy arrays.

Hand-written on purpose (a port of open_clip's `SimpleTokenizer`, itself OpenAI's, MIT licence): open_clip's
module imports torch at its top, which costs a one-shot search more than a second, and Hugging Face's
CLIP tokenizer does not apply the same ftfy/HTML cleaning. `tests/test_onnx_runtime.py` checks it
token for token against open_clip's on English, Chinese, emoji, accents, long and empty-ish inputs.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
CLEANERS = ("lower", "whitespace", "canonicalize")


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map from utf-8 bytes to printable unicode characters (what the BPE merges are written in)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def _basic_clean(text: str) -> str:
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


def _canonicalize(text: str) -> str:
    import string

    text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
    return " ".join(text.split()).strip()


def cleaner(kind: str) -> Callable[[str], str]:
    if kind == "lower":
        return lambda text: _whitespace_clean(_basic_clean(text)).lower()
    if kind == "whitespace":
        return lambda text: _whitespace_clean(_basic_clean(text))
    if kind == "canonicalize":
        return lambda text: _canonicalize(_basic_clean(text))
    raise ValueError(f"unknown tokenizer cleaning {kind!r}; one of {', '.join(CLEANERS)}")


class CLIPTokenizer:
    """Text -> int64 token ids [N, context_length], as open_clip's SimpleTokenizer makes them."""

    def __init__(self, bpe_path: str | Path, context_length: int = 77, clean: str = "lower",
                 additional_special_tokens: Sequence[str] = ()):
        """The vocabulary is parsed from its text file each time (~50 ms): tables saved as a pickle were faster
        to load by 25 ms, but a pickle replaced in the cache runs its code on the next search."""
        import regex

        special = list(SPECIAL_TOKENS) + list(additional_special_tokens)
        merges_text = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in merges_text[1 : 49152 - 256 - 2 + 1]]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(merge) for merge in merges] + special
        self.encoder = {token: index for index, token in enumerate(vocab)}
        self.bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self._cache = {token: token for token in special}
        self._pattern = regex.compile("|".join(special) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                                      regex.IGNORECASE)
        self._byte_encoder = bytes_to_unicode()
        self.sot_token_id, self.eot_token_id = self.encoder[SPECIAL_TOKENS[0]], self.encoder[SPECIAL_TOKENS[1]]
        self.context_length = context_length
        self._clean = cleaner(clean)

    def _bpe(self, token: str) -> str:
        if token in self._cache:
            return self._cache[token]
        word: tuple[str, ...] = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = set(zip(word, word[1:], strict=False))
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = set(zip(word, word[1:], strict=False))
        result = " ".join(word)
        self._cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in self._pattern.findall(self._clean(text)):
            token = "".join(self._byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(token).split(" "))
        return ids

    def __call__(self, texts: Sequence[str], context_length: int | None = None) -> np.ndarray:
        length = context_length or self.context_length
        result = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(tokens) > length:
                tokens = tokens[:length]
                tokens[-1] = self.eot_token_id
            result[row, : len(tokens)] = tokens
        return result
