"""Training from pairs alone: the similarity registry (labels | pairs | both), the triplet terms it
feeds, recall@K of the paired item against a brute-force reference, unlabelled folder rows, and a
short pairs-only training run whose validation and evaluation need no labels."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adah.config import LossConfig
from adah.data.folder import read_folder
from adah.errors import AdahError
from adah.evaluation.retrieval import Codes, evaluate_codes, has_labels, random_recall, validation_scores
from adah.training.losses import adah_objective, triplet_ranking_loss
from adah.evaluation.metrics import pack_codes, paired_recall_at_k
from adah.models.adah import BranchOutput
from adah.training.similarity import get_similarity, same_item, with_label_policy


# ----------------------------------------------------------------------------- similarity
def test_pairs_is_the_identity_both_adds_label_overlap():
    labels = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 0]])
    pairs = get_similarity("pairs")(labels, labels, 0)
    assert pairs.tolist() == torch.eye(4, dtype=torch.bool).tolist()
    both = get_similarity("both")(labels, labels, 0)
    assert both.tolist() == [[True, True, False, False], [True, True, False, False],
                             [False, False, True, False], [False, False, False, True]]  # unlabelled: itself only
    assert get_similarity("labels")(labels, labels, 0)[3].tolist() == [False] * 4
    no_labels = torch.zeros(4, 0)
    assert get_similarity("pairs")(no_labels, no_labels, 0).tolist() == pairs.tolist()
    with pytest.raises(AdahError, match="needs labels"):
        get_similarity("labels")(no_labels, no_labels, 0)
    with pytest.raises(AdahError, match="loss.similarity must be one of"):
        get_similarity("cosine")


def test_query_offset_places_a_share_of_the_queries_in_the_gathered_batch():
    assert same_item(2, 6, 2).tolist() == [[False, False, True, False, False, False],
                                            [False, False, False, True, False, False]]
    with pytest.raises(AdahError, match="do not lie among the 6 database rows"):
        same_item(2, 6, 5)


def _branch(codes: torch.Tensor) -> BranchOutput:
    return BranchOutput(codes, -codes, torch.ones(len(codes), 1), torch.ones(len(codes), 1))


def test_pair_triplets_equal_a_loop_over_in_batch_negatives():
    """t2i with S = identity: for each text i, positive image i, every other image a negative."""
    g = torch.Generator().manual_seed(0)
    img, txt = torch.tanh(torch.randn(5, 8, generator=g)), torch.tanh(torch.randn(5, 8, generator=g))
    cfg = LossConfig(similarity="pairs", reduction="mean", margin=0.3)
    terms = adah_objective(_branch(img), _branch(txt), torch.zeros(5, 0), cfg, adversarial=())
    d = torch.cdist(txt, img) / np.sqrt(8)
    ref = np.mean([max(0.0, 0.3 + float(d[i, i]) - float(d[i, k])) for i in range(5) for k in range(5) if k != i])
    assert float(terms["t2i"]) == pytest.approx(ref, rel=1e-5)
    # I->I: the query's own code is the positive (distance 0): a margin between different items
    dii = torch.cdist(img, img) / np.sqrt(8)
    ref_ii = np.mean([max(0.0, 0.3 + 1e-6 / np.sqrt(8) - float(dii[i, k])) for i in range(5) for k in range(5) if k != i])
    assert float(terms["i2i"]) == pytest.approx(ref_ii, rel=1e-4)
    # labels mode on the same batch gives other values: the similarity is really used
    lab = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1], [1, 1]])
    t_lab = adah_objective(_branch(img), _branch(txt), lab, LossConfig(similarity="labels", reduction="mean",
                                                                       margin=0.3), adversarial=())
    assert float(t_lab["t2i"]) == pytest.approx(float(triplet_ranking_loss(txt, img, lab, lab, margin=0.3,
                                                                           reduction="mean")))
    assert float(t_lab["t2i"]) != pytest.approx(float(terms["t2i"]))


# ----------------------------------------------------------------------------- paired recall
def _ref_recall(q, d, k, ties):
    """Per query: Hamming distances by a loop; the pair's rank over every order of its tie group."""
    hits = []
    for i in range(len(q)):
        dist = np.array([(q[i] != d[j]).sum() for j in range(len(d))])
        if ties == "stable":
            hits.append(float(list(np.argsort(dist, kind="stable")).index(i) < k))
            continue
        closer = int((dist < dist[i]).sum())
        tied = [j for j in range(len(d)) if dist[j] == dist[i]]
        hits.append(np.mean([closer + pos + 1 <= k for pos in range(len(tied))]))  # the pair at each position
    return float(np.mean(hits))


@pytest.mark.parametrize("ties", ["expected", "stable"])
def test_paired_recall_matches_brute_force(ties):
    rng = np.random.default_rng(3)
    q = np.where(rng.random((40, 6)) > 0.5, 1, -1)
    d = np.where(rng.random((40, 6)) > 0.5, 1, -1)
    d[:10] = q[:10]  # some pairs found at distance 0
    got = paired_recall_at_k(q, d, (1, 5, 10), ties=ties, chunk_size=7)
    for k in (1, 5, 10):
        assert got[k] == pytest.approx(_ref_recall(q, d, k, ties), abs=1e-12)
    assert paired_recall_at_k(pack_codes(q), pack_codes(d), (5,), ties=ties)[5] == pytest.approx(got[5])
    with pytest.raises(ValueError, match="one database item per query"):
        paired_recall_at_k(q, d[:5])


def test_identical_codes_recall_one_and_random_is_k_over_n():
    codes = np.array(list(itertools.product([-1, 1], repeat=5)))  # 32 distinct codes
    assert paired_recall_at_k(codes, codes, (1,)) == {1: 1.0}
    assert random_recall(79) == pytest.approx({1: 1 / 79, 5: 5 / 79, 10: 10 / 79})


def test_evaluate_without_labels_reports_recall_only_and_validation_uses_it():
    rng = np.random.default_rng(0)
    img = np.where(rng.random((20, 16)) > 0.5, 1, -1).astype(np.int8)
    txt = img.copy()
    txt[:, :3] *= -1  # pairs 3 bits apart
    q = Codes(img, txt, np.zeros((20, 0), np.uint8))
    rep = evaluate_codes(q, q, directions=("i2t", "t2i"))
    assert rep.map == {} and rep.recall["t2i"][10] > rep.recall["t2i"][1] > 0.5
    assert not has_labels(q.labels)
    scores = validation_scores(q, q, ("i2t", "t2i"), "pairs")
    assert scores["t2i"] == pytest.approx(np.mean(list(rep.recall["t2i"].values())))
    labelled = Codes(img, txt, (np.arange(20)[:, None] % 4 == np.arange(4)).astype(np.uint8))
    assert set(evaluate_codes(labelled, labelled).map) == {"i2t", "t2i"}
    assert validation_scores(labelled, labelled, ("i2t",), "labels") == evaluate_codes(labelled, labelled,
                                                                                       directions=("i2t",)).map


# ----------------------------------------------------------------------------- unlabelled folder rows
def _folder(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "img").mkdir(parents=True)
    for i, row in enumerate(rows):
        Image.new("RGB", (9, 9), (i * 40 % 255, 0, 0)).save(tmp_path / f"img/{i}.png")
        row.setdefault("image", f"img/{i}.png")
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_folder_rows_without_labels_need_a_pairs_config(tmp_path):
    folder = _folder(tmp_path, [{"text": "a red box"}, {"text": "a dark box", "labels": []}, {"text": "red box",
                                                                                               "labels": ["box"]}])
    with pytest.raises(AdahError, match=r"items.jsonl: line 1: missing field\(s\) \['labels'\]"):
        read_folder(folder)
    ds = read_folder(folder, labels_mode="optional", image_size=8)
    assert ds.data.labels.tolist() == [[0], [0], [1]] and ds.data.label_names == ["box"]
    ignored = read_folder(folder, labels_mode="ignore", image_size=8)
    assert ignored.data.labels.shape == (3, 0) and ignored.data.raw_texts == ["a red box", "a dark box", "red box"]
    with pytest.raises(AdahError, match="options.labels_mode must be one of"):
        read_folder(folder, labels_mode="maybe")


def test_label_policy_follows_the_similarity():
    from adah.config import Config

    cfg = Config.from_dict({"loss": {"similarity": "pairs"}, "data": {"name": "folder", "options": {"path": "x"}}})
    assert with_label_policy(cfg).data.options["labels_mode"] == "optional"
    assert "labels_mode" not in with_label_policy(Config.from_dict({"data": {"name": "folder"}})).data.options


def test_pairs_only_training_on_unlabelled_rows(tmp_path):
    """A folder with no labels at all trains with loss.similarity=pairs (labels mode refuses it),
    validation scores recall, the checkpoint evaluates with recall@K and no MAP."""
    from adah.config import Config
    from adah.data.registry import make_split
    from adah.features.dataset import load_dataset
    from adah.evaluation.checkpoint_eval import evaluate_checkpoint
    from adah.training.trainer import train

    words = ["red", "green", "blue", "dark", "light", "big", "small", "round"]
    rows = [{"text": f"a {words[i % 8]} {words[(i // 8) % 8]} thing", "split": "test" if i % 5 == 0 else "train"}
            for i in range(40)]
    folder = _folder(tmp_path / "data", rows)
    raw = {"model": {"bits": 8, "image_backbone": "small_cnn", "image_size": 32, "image_fc_dims": [16],
                     "text_hidden": [16], "attention": "both"},
           "loss": {"similarity": "pairs"},
           "train": {"epochs": 2, "batch_size": 8, "progress": False, "device": "cpu"},
           "data": {"name": "folder", "root": str(tmp_path), "val_fraction": 0.25,
                    "options": {"path": "data", "image_size": 32, "load_images": "eager", "labels_mode": "ignore"}}}
    cfg = Config.from_dict(raw)
    data = load_dataset(cfg.data)
    split = make_split(cfg.data, len(data))
    result = train(cfg, data, split, tmp_path / "run")
    assert np.isfinite(result.best_val_map) and 0 < result.best_val_map <= 1  # mean R@1/5/10 on 8 val pairs
    report, _ = evaluate_checkpoint(tmp_path / "run" / "best.pt")
    assert report.map == {} and set(report.recall) == {"i2t", "t2i"}
    assert all(0 <= v <= 1 for r in report.recall.values() for v in r.values())
    with pytest.raises(AdahError, match="needs labels"):
        train(Config.from_dict({**raw, "loss": {"similarity": "labels"}}), data, split, tmp_path / "run2")
