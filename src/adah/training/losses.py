"""The ADAH objective (Sec. 3.3): triplet ranking terms built from label overlap in a batch.

One function, :func:`triplet_ranking_loss`, computes every term; :func:`adah_objective` calls it
with the pairs of the paper: T->I, I->T, I->I, T->T and the adversarial T->I_hat, I->T_hat
(query codes H against the other modality's unattended codes H_hat).

For a query i, a positive j (shares a label: S(i,j)=1) and a negative k (S(i,k)=0):
``max(0, eps + d(Ha_i, Hb_j) - d(Ha_i, Hb_k))``, vectorised over all (i, j, k) of the batch.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from adah.config import LossConfig
from adah.models.adah import BranchOutput
from adah.training.similarity import get_similarity, label_overlap

MIN_TERMS = ("t2i", "i2t", "i2i", "t2t")
ADV_TERMS = ("t2i_hat", "i2t_hat")


label_similarity = label_overlap  # the paper's S; adah.training.similarity holds the other choices


def code_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "euclidean") -> torch.Tensor:
    """(Na, q), (Nb, q) -> (Na, Nb). ``euclidean``: ||a-b|| / sqrt(q); ``squared``: ||a-b||^2 / q.

    Scaled so a margin means the same at every code length (binary codes: squared = 4*Hamming/q)."""
    q = a.shape[1]
    sq = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)
    if kind == "squared":
        return sq / q
    return torch.sqrt(sq.clamp_min(1e-12)) / math.sqrt(q)


def triplet_ranking_loss(
    query_codes: torch.Tensor,
    db_codes: torch.Tensor,
    query_labels: torch.Tensor,
    db_labels: torch.Tensor,
    *,
    margin: float,
    distance: str = "euclidean",
    reduction: str = "mean",
    sum_counts: Callable[[torch.Tensor], torch.Tensor] | None = None,
    similarity: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar triplet ranking loss over all (i, j, k) with S(i,j)=1 and S(i,k)=0.

    query_codes (Na, q), db_codes (Nb, q), labels (Na, C), (Nb, C). ``reduction``: ``mean`` over
    valid triplets, ``mean_nonzero`` over triplets with a positive loss, or ``sum``. Zero (with a
    graph) when the batch has no valid triplet. ``sum_counts`` (data-parallel training) adds the
    triplet count over processes that each hold a share of the queries, so the processes'
    losses add up to the loss of the whole batch. ``similarity``: a precomputed (Na, Nb) bool S
    (:mod:`adah.training.similarity`); label overlap of the two label sets when None."""
    sim = label_similarity(query_labels, db_labels) if similarity is None else similarity
    valid = sim.unsqueeze(2) & ~sim.unsqueeze(1)  # (Na, Nb_pos, Nb_neg)
    dist = code_distance(query_codes, db_codes, distance)
    per_triplet = torch.relu(margin + dist.unsqueeze(2) - dist.unsqueeze(1)) * valid
    if reduction == "sum":
        return per_triplet.sum()
    if reduction == "mean_nonzero":
        count = (per_triplet > 0).sum()
    else:
        count = valid.sum()
    if sum_counts is not None:
        count = sum_counts(count)
    return per_triplet.sum() / count.clamp_min(1)


def adah_objective(
    image: BranchOutput,
    text: BranchOutput,
    labels: torch.Tensor,
    cfg: LossConfig,
    *,
    adversarial: tuple[str, ...] = ADV_TERMS,
    detach_queries_of_adversarial: bool = False,
    database: tuple[BranchOutput, BranchOutput, torch.Tensor] | None = None,
    sum_counts: Callable[[torch.Tensor], torch.Tensor] | None = None,
    query_offset: int = 0,
) -> dict[str, torch.Tensor]:
    """Every term by name, for one batch of paired items with (B, C) labels.

    ``adversarial`` names the adversarial terms in use (T->I_hat needs image attention, I->T_hat
    text attention). ``detach_queries_of_adversarial`` stops gradients through the query codes of
    those terms (the G step then acts only through the unattended codes). ``database`` (image,
    text, labels) is what the queries rank against, the batch itself by default; data-parallel
    training passes the codes gathered from every process, with ``sum_counts``. ``image`` None
    (a text-only model) gives the T->T term alone. S comes from ``cfg.similarity`` (label
    overlap, the pairing, or both; see :mod:`adah.training.similarity`), one matrix for every term; with
    ``database``, query row i is database row ``i + query_offset``."""
    db_image, db_text, db_labels = database if database is not None else (image, text, labels)
    sim = get_similarity(cfg.similarity)(labels, db_labels, query_offset)
    kw = {"margin": cfg.margin, "distance": cfg.distance, "reduction": cfg.reduction, "sum_counts": sum_counts,
          "similarity": sim}
    if image is None:  # a text-only model: T->T is the only term
        if adversarial:
            raise ValueError(f"adversarial terms {adversarial} need an image branch")
        return {"t2t": triplet_ranking_loss(text.codes, db_text.codes, labels, db_labels, **kw)}
    pairs = {
        "t2i": (text.codes, db_image.codes),
        "i2t": (image.codes, db_text.codes),
        "i2i": (image.codes, db_image.codes),
        "t2t": (text.codes, db_text.codes),
    }
    terms = {name: triplet_ranking_loss(q, d, labels, db_labels, **kw) for name, (q, d) in pairs.items()}
    adv_pairs = {"t2i_hat": (text.codes, db_image.codes_hat), "i2t_hat": (image.codes, db_text.codes_hat)}
    for name in adversarial:
        q, d = adv_pairs[name]
        if detach_queries_of_adversarial:
            q = q.detach()
        terms[name] = triplet_ranking_loss(q, d, labels, db_labels, **kw)
    return terms


def total_min_objective(terms: dict[str, torch.Tensor], cfg: LossConfig) -> torch.Tensor:
    """What E and D minimise: the four ranking terms + adversarial_weight * adversarial terms."""
    total = sum(terms[n] for n in MIN_TERMS if n in terms)
    adv = [terms[n] for n in ADV_TERMS if n in terms]
    if adv:
        total = total + cfg.adversarial_weight * sum(adv)
    return total


def adversarial_objective(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """What G maximises: the sum of the adversarial terms present."""
    adv = [terms[n] for n in ADV_TERMS if n in terms]
    if not adv:
        raise ValueError("no adversarial term: the 'none' variant has no G step")
    return sum(adv)
