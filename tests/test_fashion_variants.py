"""research/scripts/fashion_variants.py: the data variants that check the photo default on new collections."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fashion_variants", ROOT / "research" / "scripts" / "fashion_variants.py")
fv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fv)


def _rows():
    rows, i = [], 0
    for k, label in enumerate(f"c{j:02d}" for j in range(12)):
        for _ in range(12 - k):  # class c00 has 12 items, c11 has 1
            rows.append({"id": str(i), "image": f"images/{i}.jpg", "text": f"brand {label} blue",
                         "labels": [label], "split": "test" if i % 5 == 0 else "train"})
            i += 1
    return rows


def test_fashion10_keeps_the_ten_largest_classes():
    kept = fv.select(_rows(), "fashion10")
    assert {r["labels"][0] for r in kept} == {f"c{j:02d}" for j in range(10)}
    assert len(kept) == sum(12 - k for k in range(10))


def test_fashion_tiny_takes_at_most_eight_per_class_and_split_of_the_ten_largest(monkeypatch):
    monkeypatch.setattr(fv, "TINY_PER_CLASS", 2)
    rows = _rows()
    kept = fv.select(rows, "fashion_tiny")
    per = {}
    for r in kept:
        per[(r["labels"][0], r["split"])] = per.get((r["labels"][0], r["split"]), 0) + 1
    assert {label for label, _ in per} == {f"c{j:02d}" for j in range(10)}
    available = {}
    for r in rows:
        available[(r["labels"][0], r["split"])] = available.get((r["labels"][0], r["split"]), 0) + 1
    assert per == {k: min(2, n) for k, n in available.items() if k[0] in {lb for lb, _ in per}}
    again = fv.select(list(reversed(rows)), "fashion_tiny")
    assert {r["id"] for r in again} == {r["id"] for r in kept}  # fixed by the ids, not the order


def test_fashion_half_is_a_fixed_half():
    rows = _rows()
    a, b = fv.select(rows, "fashion_half"), fv.select(list(reversed(rows)), "fashion_half")
    assert {r["id"] for r in a} == {r["id"] for r in b}
    assert 0.3 < len(a) / len(rows) < 0.7


def test_strip_label_removes_the_class_words_only():
    assert fv.strip_label("Puma Men Black Sports Shoes", "Sports Shoes") == "Puma Men Black"
    assert fv.strip_label("Nike Men Tshirt", "Tshirts") == "Nike Men"
    assert fv.strip_label("Titan Women Watches", "Watches") == "Titan Women"
    assert fv.strip_label("Watch", "Watches") == "Watch"  # nothing would be left: the title stays


def test_write_variant_points_at_the_shared_photos(tmp_path):
    src = tmp_path / "fashion_products"
    src.mkdir()
    with (src / "items.jsonl").open("w") as fh:
        for r in _rows():
            fh.write(json.dumps(r) + "\n")
    target, _ = fv.write_variant(src, tmp_path / "out", "fashion_nolabel")
    rows = [json.loads(line) for line in target.open()]
    assert len(rows) == len(_rows())
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).parent == (src / "images").resolve() for r in rows)
    assert all(r["labels"][0] not in r["text"] for r in rows)
    assert not list((tmp_path / "out" / "fashion_nolabel").glob("*.tmp"))


@pytest.mark.slow
def test_erased_view_map_reads_the_best_checkpoint_as_model_selection_does(tmp_path):
    """research/scripts/erased_view.py: its full-view T->I MAP is the validation MAP that chose best.pt."""
    import numpy as np

    from adah.experiments import study
    from helpers import tiny_config

    spec_ev = importlib.util.spec_from_file_location("erased_view", ROOT / "research" / "scripts" / "erased_view.py")
    ev = importlib.util.module_from_spec(spec_ev)
    spec_ev.loader.exec_module(ev)
    cfg = tiny_config(**{"data.num_items": 400, "data.num_query": 40, "data.num_train": 250,
                         "train.max_batches_per_epoch": 3, "train.epochs": 2})
    study.run_study(cfg, tmp_path, variants=("erase_fixed_g_image",), seeds=1, bits=(16,), progress=False)
    run = tmp_path / "erase_fixed_g_image" / "bits16-seed0"
    full, erased = ev.erased_view_map(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open() if line.strip()]
    chosen = max(rows, key=lambda r: r["val_map"])
    assert np.isclose(full, chosen["val_map_t2i"], atol=1e-6)
    assert 0.0 < erased <= 1.0 and erased != full


def test_pooled_cosine_is_one_for_uniform_cells_and_low_for_a_single_hot_cell():
    import numpy as np

    spec_ev = importlib.util.spec_from_file_location("erased_view", ROOT / "research" / "scripts" / "erased_view.py")
    ev = importlib.util.module_from_spec(spec_ev)
    spec_ev.loader.exec_module(ev)
    rng = np.random.default_rng(0)
    same = np.repeat(rng.random((6, 5, 1, 1)), 4, axis=2).repeat(4, axis=3)  # every cell equal
    assert np.isclose(ev.pooled_cosine(same)["same_mean"], 1.0)
    hot = np.zeros((6, 5, 4, 4))
    for i in range(6):  # one cell per item, in its own channel: a half-pool misses it half the time
        hot[i, i % 5, i % 4, 0] = 1.0
        hot[i, (i + 1) % 5] += 0.01
    c = ev.pooled_cosine(hot, seed=1)
    assert c["same_min"] < 0.5 and 0.0 <= c["between_mean"] <= 1.0
