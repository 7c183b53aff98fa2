"""Bag-of-words vocabularies for the folder format: tokenizers, building, encoding, JSON.

Two tokenizers:

* ``words``: lower-cased word tokens, unicode-aware (``\\w+`` runs, so ``Café`` -> ``café``);
  with ``ngram=(1, 2)`` also word bigrams joined by a space.
* ``chars``: character n-grams (default 1- and 2-grams) inside each run of word characters,
  for languages written without spaces (Chinese, Japanese): ``一只猫`` -> ``一 只 猫 一只 只猫``.
  Punctuation and spaces break runs, so no n-gram spans them.

A :class:`Vocabulary` keeps the tokens and the tokenizer settings, so saving it with a model is
enough to encode new query text the same way later.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adah.errors import AdahError
from adah.utils.fileio import atomic_write_text

TOKENIZERS = ("words", "chars")
DEFAULT_NGRAM = {"words": (1, 1), "chars": (1, 2)}
_WORD = re.compile(r"\w+")
_FORMAT = "adah-vocabulary"


def _check_ngram(tokenizer: str, ngram) -> tuple[int, int]:
    if tokenizer not in TOKENIZERS:
        raise AdahError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    if ngram is None:
        return DEFAULT_NGRAM[tokenizer]
    if isinstance(ngram, int) and not isinstance(ngram, bool):
        ngram = (ngram, ngram)
    try:
        lo, hi = (int(v) for v in ngram)
    except (TypeError, ValueError):
        raise AdahError(f"ngram must be [min, max] (e.g. [1, 2]), got {ngram!r}") from None
    if not 1 <= lo <= hi:
        raise AdahError(f"ngram must satisfy 1 <= min <= max, got {ngram!r}")
    return lo, hi


def tokenize(text: str, tokenizer: str = "words", ngram: tuple[int, int] | None = None) -> list[str]:
    """Tokens of ``text`` in order (repeats kept)."""
    lo, hi = _check_ngram(tokenizer, ngram)
    if not isinstance(text, str):
        raise AdahError(f"text must be a string, got {type(text).__name__}")
    runs = _WORD.findall(text.lower())
    out: list[str] = []
    if tokenizer == "words":
        for n in range(lo, hi + 1):
            out.extend(" ".join(runs[i : i + n]) for i in range(len(runs) - n + 1))
    else:
        for run in runs:
            for n in range(lo, hi + 1):
                out.extend(run[i : i + n] for i in range(len(run) - n + 1))
    return out


@dataclass
class Vocabulary:
    """tokens: the V columns of the bag-of-words, in order; tokenizer / ngram: how text is split;
    binary: 1 for presence (the DCMH tag vectors are 0/1) or token counts."""

    tokens: list[str]
    tokenizer: str = "words"
    ngram: tuple[int, int] = (1, 1)
    binary: bool = True
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.ngram = _check_ngram(self.tokenizer, self.ngram)
        self.tokens = list(self.tokens)
        if any(not isinstance(t, str) or not t for t in self.tokens):
            raise AdahError("vocabulary tokens must be non-empty strings")
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            dup = [t for t, c in Counter(self.tokens).items() if c > 1][:5]
            raise AdahError(f"vocabulary has duplicate tokens, e.g. {dup}")

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        *,
        tokenizer: str = "words",
        ngram: tuple[int, int] | None = None,
        min_count: int = 1,
        max_size: int = 0,
        binary: bool = True,
    ) -> "Vocabulary":
        """Tokens found in at least ``min_count`` texts (document frequency), the ``max_size``
        most frequent (0: all), ordered by frequency then alphabetically (deterministic)."""
        ngram = _check_ngram(tokenizer, ngram)
        if not isinstance(min_count, int) or min_count < 1:
            raise AdahError(f"min_count must be a positive integer, got {min_count!r}")
        if not isinstance(max_size, int) or max_size < 0:
            raise AdahError(f"max_size must be a non-negative integer (0: no limit), got {max_size!r}")
        df: Counter[str] = Counter()
        for text in texts:
            df.update(set(tokenize(text, tokenizer, ngram)))
        ranked = sorted((t for t, c in df.items() if c >= min_count), key=lambda t: (-df[t], t))
        if max_size:
            ranked = ranked[:max_size]
        if not ranked:
            raise AdahError(f"empty vocabulary: no token appears in at least {min_count} texts")
        return cls(ranked, tokenizer=tokenizer, ngram=ngram, binary=binary)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def index(self, token: str) -> int:
        return self._index[token]

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """(N, V) float32 bag-of-words; tokens outside the vocabulary are ignored."""
        texts = list(texts)
        out = np.zeros((len(texts), len(self.tokens)), dtype=np.float32)
        for row, text in enumerate(texts):
            for tok in tokenize(text, self.tokenizer, self.ngram):
                col = self._index.get(tok)
                if col is not None:
                    out[row, col] = 1.0 if self.binary else out[row, col] + 1.0
        return out

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": 1,
            "tokenizer": self.tokenizer,
            "ngram": list(self.ngram),
            "binary": self.binary,
            "tokens": list(self.tokens),
        }

    @classmethod
    def from_dict(cls, raw, source: str = "vocabulary") -> "Vocabulary":
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise AdahError(f"{source}: not an adah vocabulary (expected a JSON object with format '{_FORMAT}')")
        if raw.get("version") != 1:
            raise AdahError(f"{source}: unsupported vocabulary version {raw.get('version')!r} (expected 1)")
        tokens = raw.get("tokens")
        if not isinstance(tokens, list):
            raise AdahError(f"{source}: field 'tokens' must be a list of strings")
        try:
            return cls(tokens, tokenizer=raw.get("tokenizer", "words"), ngram=raw.get("ngram"),
                       binary=bool(raw.get("binary", True)))
        except AdahError as exc:
            raise AdahError(f"{source}: {exc}") from None

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        path = Path(path)
        if not path.is_file():
            raise AdahError(f"vocabulary file not found: {path}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise AdahError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(raw, source=str(path))


def build_vocabulary(texts: Iterable[str], **kwargs) -> Vocabulary:
    """Shorthand for :meth:`Vocabulary.build`."""
    return Vocabulary.build(texts, **kwargs)
