"""Which items of a batch are positives for each other: the similarity S of the triplet terms.

A small registry, like the backbones': each entry maps a batch to a (Na, Nb) bool matrix
S(i, j) (True: j is a positive for query i), given the items' label rows and their positions.

* ``labels`` (the paper): S(i, j) = the two items share a label.
* ``pairs``: S(i, j) = i and j are the same item. Query i's positive is its own pair in the
  other modality (image i <-> text i) and every other item of the batch is a negative: the
  in-batch form contrastive image-text models use. No labels needed.
  Same-modality terms (I->I, T->T) then have one positive, the query's own code (distance 0),
  so they ask every other item of the batch to lie at least the margin further away: they spread
  the codes of different items apart rather than pull anything together.
* ``both``: S(i, j) = same item OR shared label (items without labels match only themselves).

Positions: query row ``i`` of the batch is database row ``i + query_offset`` (0 in a single
process; data-parallel training ranks its share of the queries against the gathered batch).
"""

from __future__ import annotations

from typing import Callable

import torch

from adah.errors import AdahError
from adah.utils.registry import Registry

SimilarityFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
SIMILARITIES: Registry[SimilarityFn] = Registry("similarity", key="loss.similarity")


def register_similarity(name: str):
    """Decorator adding ``fn(query_labels, db_labels, query_offset) -> (Na, Nb) bool`` as ``name``."""
    return SIMILARITIES.register(name)


def list_similarities() -> list[str]:
    return SIMILARITIES.names()


def get_similarity(name: str) -> SimilarityFn:
    return SIMILARITIES.get(name)


def label_overlap(query_labels: torch.Tensor, db_labels: torch.Tensor) -> torch.Tensor:
    """(Na, C), (Nb, C) multi-hot -> (Na, Nb) bool: True where the two items share a label."""
    return (query_labels.float() @ db_labels.float().T) > 0


def same_item(num_query: int, num_db: int, query_offset: int = 0, device=None) -> torch.Tensor:
    """(Na, Nb) bool: True at (i, i + query_offset), the query's own item in the database."""
    if query_offset < 0 or query_offset + num_query > num_db:
        raise AdahError(f"pair similarity: queries {query_offset}..{query_offset + num_query - 1} do not lie among the "
                        f"{num_db} database rows (each query's own item must be in the batch)")
    rows = torch.arange(num_query, device=device) + query_offset
    return rows.unsqueeze(1) == torch.arange(num_db, device=device).unsqueeze(0)


@register_similarity("labels")
def _labels(query_labels: torch.Tensor, db_labels: torch.Tensor, query_offset: int = 0) -> torch.Tensor:
    if query_labels.shape[1] == 0:
        raise AdahError("loss.similarity='labels' needs labels, but the batch has none; use 'pairs' (the pairing "
                        "alone) for unlabelled data")
    return label_overlap(query_labels, db_labels)


@register_similarity("pairs")
def _pairs(query_labels: torch.Tensor, db_labels: torch.Tensor, query_offset: int = 0) -> torch.Tensor:
    return same_item(query_labels.shape[0], db_labels.shape[0], query_offset, device=query_labels.device)


@register_similarity("both")
def _both(query_labels: torch.Tensor, db_labels: torch.Tensor, query_offset: int = 0) -> torch.Tensor:
    own = same_item(query_labels.shape[0], db_labels.shape[0], query_offset, device=query_labels.device)
    if query_labels.shape[1] == 0:
        return own
    return own | label_overlap(query_labels, db_labels)


def needs_labels(name: str) -> bool:
    """Whether training with similarity ``name`` reads the labels at all."""
    get_similarity(name)
    return name != "pairs"


def check_data_for_similarity(name: str, data) -> None:
    """AdahError when ``name`` needs labels and ``data`` (a CrossModalData) has none at all (rows
    without labels are allowed: under ``labels`` they have no positive, under ``both`` their pair)."""
    import numpy as np

    if not needs_labels(name):
        return
    labels = np.asarray(data.labels)
    if labels.shape[1] == 0:
        raise AdahError(f"loss.similarity={name!r} needs labels, but {data.name} has none; train from the pairs alone "
                        "with --set loss.similarity=pairs")
    if name == "labels" and not labels.any():
        raise AdahError(f"loss.similarity='labels': no item of {data.name} has a label; train from the pairs alone "
                        "with --set loss.similarity=pairs")


def with_label_policy(config):
    """``config`` (an adah.config.Config) whose folder data accepts unlabelled rows when the
    similarity does not need labels on every row (``pairs``, ``both``), unless
    ``data.options.labels_mode`` is set already."""
    import dataclasses

    options = dict(config.data.options or {})
    if config.loss.similarity == "labels" or config.data.name != "folder" or "labels_mode" in options:
        return config
    options["labels_mode"] = "optional"
    return dataclasses.replace(config, data=dataclasses.replace(config.data, options=options))


__all__ = ["with_label_policy", "check_data_for_similarity", "get_similarity", "label_overlap", "list_similarities", "needs_labels", "register_similarity", "same_item"]
