"""all-MiniLM-L6-v2 (a 6-layer BERT) in plain torch, read from the packaged files with
``tokenizers`` and ``safetensors``: the same token embeddings as ``transformers.AutoModel``
(tests/test_cli.py compares them) without importing transformers, which costs a text query
about as much as torch itself. Inference only (no dropout)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.attention.self, name, nn.Linear(d, d))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.attention.output.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, inner)
        self.output = nn.Module()
        self.output.dense = nn.Linear(inner, d)
        self.output.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        att = self.attention.self
        q, k, v = (getattr(att, name)(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for name in ("query", "key", "value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = self.attention.output.LayerNorm(self.attention.output.dense(context) + x)
        return self.output.LayerNorm(self.output.dense(F.gelu(self.intermediate.dense(x))) + x)


class MiniLM(nn.Module):
    """BertModel's encoder as far as ``last_hidden_state`` (its parameter names, so the
    checkpoint's safetensors load as they are)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        d, eps = config["hidden_size"], config["layer_norm_eps"]
        self.embeddings = nn.Module()
        # uninitialised tables (the checkpoint's replace them): a random normal fill of 30522 x 384 costs 0.1-0.3 s
        table = lambda n: nn.Embedding(n, d, _weight=torch.empty(n, d))  # noqa: E731
        self.embeddings.word_embeddings = table(config["vocab_size"])
        self.embeddings.position_embeddings = table(config["max_position_embeddings"])
        self.embeddings.token_type_embeddings = table(config["type_vocab_size"])
        self.embeddings.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(d, config["num_attention_heads"], config["intermediate_size"], eps)
                                           for _ in range(config["num_hidden_layers"]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        e = self.embeddings
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        x = e.LayerNorm(e.word_embeddings(input_ids) + e.position_embeddings(positions)[None] + e.token_type_embeddings(types))
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return SimpleNamespace(last_hidden_state=x)


class WordPieces:
    """The fast WordPiece tokenizer of ``tokenizer.json``, called as transformers' is:
    ``tok(texts, padding=True, truncation=True, max_length=L, return_tensors="pt")``,
    ``tok.tokenize(text)``, ``tok.convert_ids_to_tokens(ids)``."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def __call__(self, texts: list[str], *, padding: bool = True, truncation: bool = True, max_length: int = 512,
                 return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        tok.enable_truncation(max_length) if truncation else tok.no_truncation()
        tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]") if padding else tok.no_padding()
        enc = tok.encode_batch(list(texts))
        return {"input_ids": torch.tensor([e.ids for e in enc]),
                "token_type_ids": torch.tensor([e.type_ids for e in enc]),
                "attention_mask": torch.tensor([e.attention_mask for e in enc])}

    def tokenize(self, text: str) -> list[str]:
        self.tokenizer.no_truncation()  # every piece, as transformers' tokenize gives them
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.id_to_token(i) for i in ids]


def load_minilm(path: Path, device: str | torch.device = "cpu") -> tuple[MiniLM, WordPieces]:
    """The model (eval mode, no gradients) and tokenizer in the folder ``path``."""
    from safetensors.torch import load_file

    model = MiniLM(json.loads((path / "config.json").read_text()))
    state = {k: v for k, v in load_file(str(path / "model.safetensors")).items()
             if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    model.load_state_dict(state, assign=True)
    return model.to(device).eval().requires_grad_(False), WordPieces(path)
