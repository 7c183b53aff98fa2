"""Text feature learning E, as parts in a registry (like the image backbones): each entry builds
the text branch (E, G, D) of a model and the reader that turns raw query text into its input.

==========  ==============================================  ======================================
name        E (input)                                       attention G (``model.attention``)
==========  ==============================================  ======================================
bow_mlp     bag-of-words (B, V) -> MLP ``text_hidden``      over the d MLP units (the paper)
minilm      frozen all-MiniLM-L6-v2 token embeddings        over the **word pieces** of the text:
            (B, L, 384), cached; a per-token MLP            the mask says which words are kept
            ``text_hidden``, mean pooled
==========  ==============================================  ======================================

Which suits which language: ``minilm`` was trained on English sentence pairs (its word-piece
vocabulary is English); captions in other languages, and in scripts written without spaces, keep
``bow_mlp`` with the ``chars`` tokenizer (data.options.tokenizer) trained on the user's own data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from adah.errors import AdahError
from adah.utils.registry import Registry
from adah.models.attention import AttentionOutput, Gate, attention_kwargs, init_score_layer, split_parts
from adah.models.hashing import BranchOutput, HashHead
from adah.models.text import TextBranch


# --------------------------------------------------------------------------- word-level attention G
class TokenAttention(nn.Module):
    """G over the tokens of a text: (B, L, d) token features and a (B, L) bool ``valid`` ->
    AttentionOutput with (B, L) mask and probs. A linear score per token and the configured
    :class:`~adah.models.attention.Gate` over each text's own valid tokens (the paper's: softmax,
    Z = [p >= 1/n] with n the text's token count, straight-through gradient, like the image and
    unit attention; every other ``attention.*`` choice, keep_fraction, mask, noise, temperature,
    init, residual and rescale, acts on words as it does on cells). ``enabled=False`` keeps every
    valid token (the ``none`` variant). Padding positions are in neither part."""

    def __init__(self, dim: int, enabled: bool = True, *, init: str = "random", residual: float = 0.0,
                 rescale: bool = False, **gate) -> None:
        super().__init__()
        self.enabled, self.residual, self.rescale = enabled, residual, rescale
        self.score = nn.Linear(dim, 1) if enabled else None
        self.gate = Gate(**gate) if enabled else None
        if enabled:
            if init == "saliency":
                raise AdahError("attention.init='saliency' is for image maps (a cell's mean activation); the "
                                "minilm text branch scores words with a learned layer: use 'random' or 'zero'")
            init_score_layer(self.score, init)

    def forward(self, feats: torch.Tensor, valid: torch.Tensor) -> AttentionOutput:
        valid_f = valid.to(feats.dtype)
        n = valid_f.sum(1, keepdim=True).clamp_min(1)
        if self.enabled:
            scores = self.score(feats).squeeze(-1)
            mask, probs = self.gate(scores, valid)
            mask = mask.to(feats.dtype)
        else:
            probs, mask = valid_f / n, valid_f
        attended, unattended = split_parts(feats, mask.unsqueeze(-1), self.residual, self.rescale,
                                           valid_f.unsqueeze(-1))
        return AttentionOutput(attended, unattended, mask, probs)


class TokenTextBranch(nn.Module):
    """(B, L, D) token embeddings (zero rows = padding) -> BranchOutput: per-token MLP E,
    token attention G, mean over the text's tokens, hashing D. The mask is over the L tokens."""

    def __init__(self, cfg, attention=None) -> None:
        super().__init__()
        if cfg.text_dim <= 0:
            raise AdahError(f"model.text_dim must be the token embedding size (> 0), got {cfg.text_dim}")
        layers: list[nn.Module] = []
        d = cfg.text_dim
        for h in cfg.text_hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            d = h
        self.encoder = nn.Sequential(*layers)
        # every choice of G (attention_kwargs) acts on words as on cells: residual, gate, mask, ...
        self.attention = TokenAttention(d, enabled=cfg.text_attention,
                                        **(attention_kwargs(attention) if attention is not None else {}))
        self.hash = HashHead(nn.Identity(), d, cfg.bits)
        self.in_dim = cfg.text_dim

    def _valid(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.in_dim:
            raise AdahError(f"the minilm text branch reads (B, L, {self.in_dim}) token embeddings, got "
                            f"{tuple(tokens.shape)}")
        return tokens.abs().sum(-1) > 0

    def attend(self, tokens: torch.Tensor) -> AttentionOutput:
        """The token attention of ``tokens``: mask and probs (B, L) over their word pieces."""
        tokens = tokens.float()
        return self.attention(self.encoder(tokens), self._valid(tokens))

    def forward(self, tokens: torch.Tensor):
        tokens = tokens.float()
        valid = self._valid(tokens)
        att = self.attention(self.encoder(tokens), valid)
        n = valid.sum(1, keepdim=True).clamp_min(1).to(att.attended.dtype)
        return BranchOutput(self.hash(att.attended.sum(1) / n), self.hash(att.unattended.sum(1) / n), att.mask,
                            att.probs)


# --------------------------------------------------------------------------- readers of query text
class BowReader:
    """Raw text -> (1, V) bag-of-words with the model's Vocabulary."""

    def __init__(self, vocabulary) -> None:
        self.vocabulary = vocabulary

    def tokens(self, text: str) -> tuple[list[str], list[str]]:
        from adah.data.vocab import tokenize

        words = list(dict.fromkeys(tokenize(text, self.vocabulary.tokenizer, self.vocabulary.ngram)))
        return [t for t in words if t in self.vocabulary], [t for t in words if t not in self.vocabulary]

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, list[list[str]] | None]:
        return torch.from_numpy(self.vocabulary.encode(texts)), None


class MiniLMReader:
    """Raw text -> (1, L, 384) MiniLM token embeddings and its word pieces (offline encoder)."""

    def __init__(self, max_tokens: int) -> None:
        from adah.models.minilm import SentenceTokens

        self.encoder = SentenceTokens(max_tokens)

    def tokens(self, text: str) -> tuple[list[str], list[str]]:
        pieces = self.encoder.pieces(text)
        return [p for p in pieces if p != "[UNK]"], [p for p in pieces if p == "[UNK]"]

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, list[list[str]]]:
        arr, pieces = self.encoder.embed(list(texts))
        return torch.from_numpy(arr), pieces


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TextEncoderSpec:
    """``build(model_cfg) -> nn.Module`` (the text branch); ``reader(model_cfg, vocabulary,
    data_options) -> reader`` for raw query text (None when it cannot read words); ``inputs``:
    what the branch reads, for error messages."""

    name: str
    build: Callable
    reader: Callable
    inputs: str
    token_level: bool


TEXT_ENCODERS: Registry[TextEncoderSpec] = Registry("text encoder", key="model.text_encoder")


def register_text_encoder(spec: TextEncoderSpec) -> TextEncoderSpec:
    return TEXT_ENCODERS.add(spec.name, spec)


def list_text_encoders() -> list[str]:
    return TEXT_ENCODERS.names()


def get_text_encoder(name: str) -> TextEncoderSpec:
    return TEXT_ENCODERS.get(name)


def build_text_branch(cfg, attention=None) -> nn.Module:
    """The text branch of ``cfg.text_encoder`` (a ModelConfig); ``attention`` (an AttentionConfig)
    configures G over the bag-of-words branch's units; the word-level G of ``minilm`` takes its
    residual form and otherwise keeps the paper's (softmax over the words, alpha = 1/n, hard mask)."""
    return get_text_encoder(cfg.text_encoder).build(cfg, attention)


def _bow_branch(cfg, attention=None):
    return TextBranch(cfg, attention)


def _bow_reader(cfg, vocabulary, data_options):
    return BowReader(vocabulary) if vocabulary is not None else None


def _minilm_reader(cfg, vocabulary, data_options):
    from adah.models.minilm import DEFAULT_MAX_TOKENS

    return MiniLMReader(int((data_options or {}).get("text_max_tokens", DEFAULT_MAX_TOKENS)))


register_text_encoder(TextEncoderSpec("bow_mlp", _bow_branch, _bow_reader, "(N, V) bag-of-words", False))
register_text_encoder(TextEncoderSpec("minilm", TokenTextBranch, _minilm_reader,
                                      "(N, L, 384) MiniLM token embeddings (data.options.text_features)", True))


def check_text_inputs(model_cfg, data) -> None:
    """AdahError when the data's texts are not what ``model_cfg.text_encoder`` reads."""
    spec = get_text_encoder(model_cfg.text_encoder)
    tokens = np.ndim(data.texts) == 3
    if tokens != spec.token_level:
        found = "token embeddings (data.options.text_features is set)" if tokens else "bag-of-words"
        hint = ("set data.options.text_features to a cache folder (e.g. runs/features/text)" if spec.token_level
                else "set model.text_encoder='minilm', or drop data.options.text_features")
        raise AdahError(f"model.text_encoder {spec.name!r} reads {spec.inputs}, but the data's texts are {found}; {hint}")


def words_of(pieces: list[str], mask, probs) -> list[dict]:
    """Word pieces with their mask and attention -> whole words: ``{"word", "kept", "weight"}``
    (a word is kept when any of its pieces is; its weight is the sum of its pieces' attention)."""
    words: list[dict] = []
    for piece, m, p in zip(pieces, mask, probs):
        if piece.startswith("##") and words:
            words[-1]["word"] += piece[2:]
            words[-1]["kept"] = words[-1]["kept"] or bool(m)
            words[-1]["weight"] += float(p)
        else:
            words.append({"word": piece, "kept": bool(m), "weight": float(p)})
    for w in words:
        w["weight"] = round(w["weight"], 4)
    return words


__all__ = ["BowReader", "MiniLMReader", "TextEncoderSpec", "TokenAttention", "TokenTextBranch", "build_text_branch",
           "check_text_inputs", "get_text_encoder", "list_text_encoders", "register_text_encoder", "words_of"]
