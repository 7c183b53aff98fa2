"""``adah fit PHOTOS_DIR --out OUT``: from a folder of captioned photos to a searchable index.

One call runs, with progress bars:

1. image features: a frozen ImageNet MobileNetV2 over every photo, cached in ``OUT/features/image``
   (:mod:`adah.features.image_cache`); text features: frozen all-MiniLM-L6-v2 token embeddings in
   ``OUT/features/text`` (:mod:`adah.features.text_cache`). Both are reused by later runs on the
   same photos and captions (``--force`` retrains without recomputing them);
2. training (:mod:`adah.training.trainer`) with the triplet similarity the data allows: label overlap and
   the pairing (``both``) when every item has labels, the pairing alone (``pairs``) otherwise;
3. evaluation on the held-out query rows: recall@K of each query's own pair (and MAP when labels
   exist), beside a random ranking;
4. an index of every item (:mod:`adah.index`) in ``OUT/index``.

The split: the list file's split column when it names test/query rows; when it has ``val`` rows
but no test rows, those become the queries (validation is then carved from the training rows);
without a split column, a random 10% (at most 1,000) of the items are queries.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from adah.config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from adah.errors import AdahError
from adah.utils.fileio import atomic_write_text

SIMILARITY_CHOICES = ("auto", "labels", "pairs", "both")


@dataclass
class FitResult:
    out: Path
    index: Path
    checkpoint: Path
    similarity: str
    num_items: int
    num_query: int
    recall: dict = field(default_factory=dict)  # direction -> {K: recall}
    map: dict = field(default_factory=dict)
    random_recall: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def fit_config(list_file: Path, out: Path, *, similarity: str, ignore_labels: bool, text_encoder: str, bits: int,
               epochs: int, seed: int, attention: str, device: str) -> tuple[Config, str]:
    """The Config ``adah fit`` trains with, and the similarity it resolved ``auto`` to."""
    from adah.data.folder import SPLIT_ROLES, read_list_file

    if similarity not in SIMILARITY_CHOICES:
        raise AdahError(f"--similarity must be one of {SIMILARITY_CHOICES}, got {similarity!r}")
    out = Path(out).resolve()  # the saved config names the caches wherever it is used from
    items = read_list_file(list_file, image_field=None, labels_field=None if ignore_labels else "labels",
                           labels_required=False)
    labelled = sum(1 for it in items if it.labels)
    if similarity == "auto":
        similarity = "both" if labelled == len(items) else "pairs"
    if similarity == "labels" and labelled < len(items):
        raise AdahError(f"{list_file}: --similarity labels needs a label on every item, {len(items) - labelled} of "
                        f"{len(items)} have none{' (--ignore-labels)' if ignore_labels else ''}; use pairs or both")
    options: dict = {"path": str(list_file.resolve()), "image_size": 224,
                     "labels_mode": "ignore" if ignore_labels else ("required" if similarity == "labels" else "optional"),
                     "features": str(out / "features" / "image"), "on_empty": "warn"}
    if text_encoder == "minilm":
        options["text_features"] = str(out / "features" / "text")
    num_query = num_train = 0
    splits = {it.split for it in items}
    roles = {SPLIT_ROLES.get(v) for v in splits if v is not None}
    if None in splits or not splits - {None} or (roles and "query" not in roles and "val" not in roles):
        options["use_split_column"] = False
        num_query = max(1, min(1000, len(items) // 10))
        num_train = len(items) - num_query
    elif "query" not in roles:
        options["split_map"] = {v: "query" for v in splits if SPLIT_ROLES.get(v) == "val"}
    cfg = Config(
        model=ModelConfig(bits=bits, attention=attention, image_backbone="mobilenet_v2", image_weights="DEFAULT",
                          freeze_backbone=True, image_fc_dims=(512, 256), text_hidden=(256,) if text_encoder == "minilm"
                          else (512, 256), text_encoder=text_encoder),
        loss=LossConfig(similarity=similarity),
        train=TrainConfig(epochs=epochs, batch_size=32, lr=5e-4, attention_lr=5e-4, lr_step_epochs=max(epochs, 1),
                          seed=seed, device=device),
        data=DataConfig(name="folder", num_query=num_query, num_train=num_train, val_fraction=0.2, seed=seed,
                        options=options),
    )
    if text_encoder == "bow_mlp":
        cfg.data.options["min_count"] = 2 if len(items) >= 100 else 1
    if attention != "none":  # a G trained to choose (the paper's), so that --explain shows its choice of words
        cfg = cfg.with_preset("paper")
    return cfg.validate(), similarity


def fit_folder(photos: str | Path, out: str | Path, *, similarity: str = "auto", ignore_labels: bool = False,
               text_encoder: str = "minilm", bits: int = 32, epochs: int = 30, seed: int = 0, attention: str = "none",
               device: str = "cpu", force: bool = False, progress: bool = True) -> FitResult:
    """Features (cached), training and index for the folder ``photos`` (a list file, or a folder
    holding items.jsonl / .csv / .tsv); everything lands in ``out`` (see the module docstring)."""
    from adah.data.folder import find_list_file
    from adah.data.registry import make_split
    from adah.features.dataset import load_dataset
    from adah.evaluation.retrieval import encode, evaluate_codes, random_recall
    from adah.features.image_cache import extract_features
    from adah.index import build_index
    from adah.training.trainer import train

    list_file = find_list_file(photos)
    out = Path(out)
    if (out / "best.pt").exists() or (out / "checkpoints").exists():
        if not force:
            raise AdahError(f"{out} already holds a fitted model; pass --force to train again (the feature caches in "
                            f"{out / 'features'} are kept and reused) or choose another --out")
        for name in ("checkpoints", "index", "best.pt", "last.pt", "metrics.jsonl", "fit.json"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    cfg, similarity = fit_config(list_file, out, similarity=similarity, ignore_labels=ignore_labels,
                                 text_encoder=text_encoder, bits=bits, epochs=epochs, seed=seed, attention=attention,
                                 device=device)
    cfg.train.progress = progress
    seconds = {}
    t0 = time.perf_counter()
    extract_features(cfg, cfg.data.options["features"], device=device, progress=progress)
    if "text_features" in cfg.data.options:  # make (or check) the token cache with this call's progress setting
        from dataclasses import replace

        from adah.features.text_cache import attach_text_cache

        plain = replace(cfg.data, options={k: v for k, v in cfg.data.options.items() if k != "text_features"})
        attach_text_cache(load_dataset(plain), cfg.data.options["text_features"], progress=progress)
    data = load_dataset(cfg.data)  # reads the caches
    seconds["features"] = round(time.perf_counter() - t0, 1)
    split = make_split(cfg.data, len(data))
    t0 = time.perf_counter()
    result = train(cfg, data, split, out)
    seconds["train"] = round(time.perf_counter() - t0, 1)
    q = encode(result.model, data, split.query)
    db = encode(result.model, data, split.retrieval)
    report = evaluate_codes(q, db, directions=("i2t", "t2i"))
    t0 = time.perf_counter()
    built = build_index(out / "best.pt", out / "index", batch_size=64, force=True, progress=progress)
    seconds["index"] = round(time.perf_counter() - t0, 1)
    fit = FitResult(out, built.path, out / "best.pt", similarity, len(data), len(split.query), report.recall,
                    report.map, random_recall(len(split.query)), seconds)
    atomic_write_text(out / "fit.json", json.dumps({
        "list_file": str(list_file.resolve()), "similarity": similarity, "num_items": fit.num_items,
        "num_query": fit.num_query, "recall": {d: {str(k): v for k, v in r.items()} for d, r in fit.recall.items()},
        "random_recall": {str(k): v for k, v in fit.random_recall.items()}, "map": fit.map, "seconds": seconds,
    }, indent=2))
    return fit
