"""Evaluate a saved checkpoint on the query / retrieval split it was trained with."""

from __future__ import annotations

import json
from pathlib import Path

from adah.training.checkpoint import load_model
from adah.data.base import Split
from adah.features.dataset import load_dataset
from adah.errors import AdahError
from adah.evaluation.retrieval import DIRECTIONS, RetrievalReport, encode, evaluate_codes
from adah.utils.fileio import atomic_write_text
from adah.utils.runtime import resolve_device


def plot_checkpoint_attention(
    checkpoint: str | Path,
    out: str | Path,
    *,
    count: int = 6,
    split_path: str | Path | None = None,
    device: str = "cpu",
) -> Path:
    """Draw the image attention of a checkpoint over the photos of its first ``count`` test
    queries (the paper's Fig. 6; :func:`adah.evaluation.plots.plot_attention_grid`) into the PNG ``out``.

    The masks come from the pixels (preprocess + backbone + G), also when the model was trained
    on a feature cache: the dataset is reloaded without ``data.options.features``."""
    import torch

    from adah.features.image_cache import without_cache
    from adah.evaluation.plots import plot_attention_grid

    checkpoint = Path(checkpoint)
    dev = resolve_device(device)
    model, config, _ = load_model(checkpoint, dev)
    if getattr(model, "image", None) is None or not model.image.backbone.spatial:
        raise AdahError(f"{checkpoint}: attention pictures need a model with a pixel backbone, this one has "
                        f"model.image_backbone={config.model.image_backbone!r}")
    if not model.image.spatial_mask:
        raise AdahError(f"{checkpoint}: its image mask is over the channels (attention.image_positions="
                        "'channels'), not over places in the photo: there is no attention picture to draw")
    data = load_dataset(without_cache(config.data))
    if data.images is None or data.images.ndim != 4:
        raise AdahError(f"{checkpoint}: dataset {config.data.name!r} has no photos to draw attention on")
    split_path = Path(split_path) if split_path else checkpoint.parent / "split.json"
    rows = Split.load(split_path, num_items=len(data)).query[:count]
    pixels = data.images[rows]
    with torch.no_grad():
        att = model.image.attend(torch.from_numpy(pixels).to(dev))
    names = data.label_names or [str(i) for i in range(data.num_labels)]
    captions = []
    for r in rows:
        labels = [n for n, on in zip(names, data.labels[r]) if on]
        text = ", ".join(labels)
        captions.append(f"#{int(r)}: " + (text if len(text) <= 40 else text[:37] + "..."))
    return plot_attention_grid(pixels, att.mask.float().cpu().numpy(), att.probs.float().cpu().numpy(), out,
                               captions=captions)


def plot_checkpoint_text_attention(
    checkpoint: str | Path,
    out: str | Path,
    *,
    count: int = 6,
    split_path: str | Path | None = None,
    device: str = "cpu",
) -> Path:
    """Draw which words of its first ``count`` test queries' texts a checkpoint's text attention
    keeps (:func:`adah.evaluation.plots.plot_text_attention`) into the PNG ``out``; models with a word-level
    text encoder (``minilm``) only."""
    import torch

    from adah.models.text_encoders import get_text_encoder, words_of
    from adah.evaluation.plots import plot_text_attention

    checkpoint = Path(checkpoint)
    dev = resolve_device(device)
    model, config, payload = load_model(checkpoint, dev)
    spec = get_text_encoder(config.model.text_encoder)
    if not spec.token_level:
        raise AdahError(f"{checkpoint}: its text attention is over the hidden units of model.text_encoder "
                        f"{spec.name!r}, not over words; a word picture needs model.text_encoder='minilm'")
    if not config.model.text_attention:
        raise AdahError(f"{checkpoint}: the model has no text attention (model.attention="
                        f"{config.model.attention!r}): every word counts; train with --attention text or both")
    data = load_dataset(config.data)
    if data.raw_texts is None:
        raise AdahError(f"{checkpoint}: dataset {config.data.name!r} keeps no raw texts to show")
    split_path = Path(split_path) if split_path else checkpoint.parent / "split.json"
    rows = Split.load(split_path, num_items=len(data)).query[:count]
    reader = spec.reader(config.model, None, config.data.options)
    inputs, pieces = reader.encode([data.raw_texts[r] for r in rows])
    with torch.no_grad():
        att = model.text.attend(inputs.to(dev))
    texts = [words_of(p, att.mask[i, : len(p)].cpu().numpy(), att.probs[i, : len(p)].float().cpu().numpy())
             for i, p in enumerate(pieces)]
    return plot_text_attention(texts, out, titles=[f"#{int(r)}" for r in rows])


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    split_path: str | Path | None = None,
    topk: int | None = 500,
    directions: tuple[str, ...] = tuple(DIRECTIONS),
    out: str | Path | None = None,
    device: str = "cpu",
) -> tuple[RetrievalReport, Path]:
    """Encode the split's queries and retrieval set, score ``directions``, write JSON to ``out``
    (default ``eval.json`` beside the checkpoint). Refuses data that differs from training."""
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not directions:
        raise AdahError(f"unknown direction(s) {bad or directions}; choose from {', '.join(DIRECTIONS)}")
    checkpoint = Path(checkpoint)
    dev = resolve_device(device)
    model, config, payload = load_model(checkpoint, dev)
    if not model.has_image_branch:  # a text-only model has T->T alone
        if "t2t" not in directions:
            raise AdahError(f"{checkpoint}: a text-only model can only be evaluated on t2t, asked for {directions}")
        directions = ("t2t",)
    data = load_dataset(config.data)
    if payload.get("data_fingerprint") not in (None, data.fingerprint()):
        raise AdahError(f"{checkpoint}: the dataset rebuilt from its config differs from the one it was trained on")
    split_path = Path(split_path) if split_path else checkpoint.parent / "split.json"
    split = Split.load(split_path, num_items=len(data))
    q = encode(model, data, split.query, device=dev)
    db = encode(model, data, split.retrieval, device=dev)
    report = evaluate_codes(q, db, directions=directions, topk=topk, pr_curves=True)
    out = Path(out) if out else checkpoint.parent / "eval.json"
    atomic_write_text(out, json.dumps({
        "checkpoint": str(checkpoint), "epoch": payload.get("epoch"), "split": str(split_path),
        "split_sha256": split.digest(), "config": config.to_dict(), **report.to_dict(),
    }, indent=2))
    return report, out
