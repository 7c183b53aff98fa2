"""Encode a dataset with a model and score retrieval in the four directions I->T, T->I, I->I, T->T.

Every direction calls the same metric functions with the query and database codes swapped in;
the database is the protocol's retrieval set (or the training set during validation).

Two kinds of measure, reported where they apply:

* MAP (and top-K MAP, PR curves): relevance is a shared label, so it needs labels on every item
  (skipped for unlabelled data);
* recall@K of the paired item (R@1, R@5, R@10; cross-modal directions only): each query ranks
  the other modality's codes of the *query items themselves*, and its one relevant item is its
  own pair (the standard image-text retrieval protocol, e.g. COCO 1K/5K test); needs no labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from adah.utils.progress import progress_bar

from adah.evaluation import metrics
from adah.data.base import CrossModalData
from adah.errors import AdahError
from adah.models import ADAH, binarize
from adah.utils.runtime import batch_tensors

DIRECTIONS = {"i2t": ("image", "text"), "t2i": ("text", "image"), "i2i": ("image", "image"), "t2t": ("text", "text")}


@dataclass
class Codes:
    """Binary codes of a set of items: image and text (n, bits) int8 in {-1, +1}, labels (n, C).
    ``image`` is None for a text-only model."""

    image: np.ndarray | None
    text: np.ndarray
    labels: np.ndarray

    def of(self, modality: str) -> np.ndarray:
        codes = self.image if modality == "image" else self.text
        if codes is None:
            raise AdahError("no image codes: the model is text only; evaluate the t2t direction")
        return codes


@torch.no_grad()
def encode(
    model: ADAH,
    data: CrossModalData,
    indices: np.ndarray,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "encode",
) -> Codes:
    """sign(D(attended)) for rows ``indices`` of ``data``, both modalities (text only for a
    text-only model), in batches."""
    was_training = model.training
    model.eval()
    images, texts = [], []
    for start in progress_bar(range(0, len(indices), batch_size), desc=desc, disable=not progress, leave=False):
        img, txt, _ = batch_tensors(data, indices[start : start + batch_size], device)
        if model.has_image_branch:
            images.append(binarize(model.encode_image(img)).cpu().numpy())
        texts.append(binarize(model.encode_text(txt)).cpu().numpy())
    model.train(was_training)
    bits = model.cfg.bits
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros((0, bits), np.int8)  # noqa: E731
    image_codes = cat(images) if model.has_image_branch else None
    return Codes(image_codes, cat(texts), np.asarray(data.labels[indices]))


def encode_sharded(model: ADAH, data: CrossModalData, indices: np.ndarray, ctx, **kw) -> Codes:
    """``encode`` split over the processes of a data-parallel run (``ctx``: a DistContext), each
    encoding a contiguous share, gathered in order; plain ``encode`` in a single process."""
    if not ctx.enabled:
        return encode(model, data, indices, **kw)
    parts = np.array_split(np.asarray(indices), ctx.world_size)
    local = encode(model, data, parts[ctx.rank], **kw)
    sizes = [len(p) for p in parts]
    image = None if local.image is None else ctx.gather_rows(local.image, sizes)
    return Codes(image, ctx.gather_rows(local.text, sizes),
                 np.asarray(data.labels[indices]))


@dataclass
class RetrievalReport:
    """MAP per direction over the whole database, optional top-K MAP, and PR curves by radius."""

    map: dict[str, float]
    topk: int | None = None
    map_topk: dict[str, float] = field(default_factory=dict)
    map_expected: dict[str, float] = field(default_factory=dict)  # tie-aware (random order within ties)
    pr: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    num_query: int = 0
    num_db: int = 0
    recall: dict[str, dict[int, float]] = field(default_factory=dict)  # paired recall@K per direction

    def to_dict(self) -> dict:
        return {
            "map": self.map, "topk": self.topk, "map_topk": self.map_topk, "map_expected": self.map_expected,
            "pr": self.pr, "num_query": self.num_query, "num_db": self.num_db,
            "recall": {d: {str(k): v for k, v in r.items()} for d, r in self.recall.items()},
        }


RECALL_KS = (1, 5, 10)


def has_labels(labels: np.ndarray) -> bool:
    """True when every row has at least one label: label-based MAP is defined."""
    labels = np.asarray(labels)
    return labels.ndim == 2 and labels.shape[1] > 0 and labels.shape[0] > 0 and bool(labels.any(axis=1).all())


def paired_recall(codes: Codes, directions: tuple[str, ...], ks: tuple[int, ...] = RECALL_KS) -> dict[str, dict[int, float]]:
    """Recall@K of the paired item among ``codes``' own items, for the cross-modal directions in
    ``directions`` (tie-aware: a random order inside Hamming ties)."""
    out = {}
    for name in directions:
        q_mod, d_mod = DIRECTIONS[name]
        if q_mod != d_mod and codes.image is not None and len(codes.text):
            out[name] = metrics.paired_recall_at_k(codes.of(q_mod), codes.of(d_mod), ks)
    return out


def random_recall(n: int, ks: tuple[int, ...] = RECALL_KS) -> dict[int, float]:
    """Recall@K of a random ranking of n items: K / n (capped at 1)."""
    return {k: min(1.0, k / n) for k in ks} if n else {k: float("nan") for k in ks}


def evaluate_codes(
    query: Codes,
    db: Codes,
    *,
    directions: tuple[str, ...] = ("i2t", "t2i"),
    topk: int | None = None,
    pr_curves: bool = False,
    tie_aware: bool = False,
    recall_ks: tuple[int, ...] | None = RECALL_KS,
) -> RetrievalReport:
    """Score ``directions`` (keys of DIRECTIONS). I->T queries image codes against text codes.
    ``tie_aware`` adds the expected MAP under random order within Hamming ties (``map_expected``).
    MAP needs labels on every query and database item (skipped otherwise); ``recall_ks`` adds
    the paired recall@K among the queries (None: not computed)."""
    report = RetrievalReport(map={}, topk=topk, num_query=len(query.text), num_db=len(db.text))
    if recall_ks:
        report.recall = paired_recall(query, directions, recall_ks)
    if not (has_labels(query.labels) and has_labels(db.labels)):
        return report
    for name in directions:
        q_mod, d_mod = DIRECTIONS[name]
        args = (query.of(q_mod), db.of(d_mod), query.labels, db.labels)
        report.map[name] = metrics.mean_average_precision(*args)
        if tie_aware:
            report.map_expected[name] = metrics.mean_average_precision(*args, ties="expected")
        if topk:
            report.map_topk[name] = metrics.mean_average_precision(*args, topk=topk)
        if pr_curves:
            radius, precision, recall = metrics.pr_curve_by_radius(*args)
            report.pr[name] = {"radius": radius.tolist(), "precision": precision.tolist(), "recall": recall.tolist()}
    return report


def validation_metric(similarity: str, labels: np.ndarray) -> str:
    """The name of what :func:`validation_scores` returns for this similarity and these labels."""
    return "MAP" if similarity != "pairs" and has_labels(labels) else "mean R@1/5/10"


def validation_scores(query: Codes, db: Codes, directions: tuple[str, ...], similarity: str = "labels") -> dict[str, float]:
    """The model-selection score per direction: MAP of ``query`` against ``db`` when training
    uses labels (``similarity`` labels or both) and they exist; else, when training uses the
    pairing alone, the mean of R@1, R@5 and R@10 of the paired item among the queries."""
    if similarity != "pairs" and has_labels(query.labels) and has_labels(db.labels):
        return evaluate_codes(query, db, directions=directions, recall_ks=None).map
    recall = paired_recall(query, directions)
    return {d: float(np.mean(list(r.values()))) for d, r in recall.items()}


def format_recall_table(report: RetrievalReport, random_n: int | None = None) -> str:
    """R@1 / R@5 / R@10 per cross-modal direction; a 'random' row for ``random_n`` items."""
    ks = sorted({k for r in report.recall.values() for k in r})
    head = f"{'direction':<10}" + "".join(f"{f'R@{k}':>9}" for k in ks)
    lines = [head, "-" * len(head)]
    for d, r in report.recall.items():
        lines.append(f"{d.replace('2', '->').upper():<10}" + "".join(f"{r[k]:>9.4f}" for k in ks))
    if random_n:
        rnd = random_recall(random_n, tuple(ks))
        lines.append(f"{'random':<10}" + "".join(f"{rnd[k]:>9.4f}" for k in ks))
    return "\n".join(lines)


def format_map_table(reports: dict[str, RetrievalReport], directions: tuple[str, ...] = ("i2t", "t2i")) -> str:
    """A fixed-width text table: one row per method, one MAP column per direction."""
    head = f"{'method':<22}" + "".join(f"{d.replace('2', '->').upper():>9}" for d in directions)
    lines = [head, "-" * len(head)]
    for name, rep in reports.items():
        lines.append(f"{name:<22}" + "".join(f"{rep.map.get(d, float('nan')):>9.4f}" for d in directions))
    return "\n".join(lines)
