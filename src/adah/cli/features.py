"""``adah features extract``: the feature cache of a dataset (registered on :data:`adah.cli.app`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from adah.cli.common import DEVICE_HELP, Typer, _friendly_errors, _parse_sets, require_image_weights
from adah.utils.fileio import check_output_folder

features_app = Typer(help="Feature cache: a frozen backbone's conv maps, computed once.")


@features_app.command("extract")
@_friendly_errors
def extract_cmd(
    config: str = typer.Option(..., help="A JSON config file, or the name of a bundled one (its data and model)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Cache folder (default: the config's data.options.features)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone (default: model.image_backbone), e.g. mobilenet_v2."),
    weights: Optional[str] = typer.Option(None, help="Weights: DEFAULT or a file (default: model.image_weights)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Images per batch (default 32, or the cache's)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    data_root: Optional[str] = typer.Option(None, help="Data root (default: $ADAH_DATA, then ../shared/data)."),
    set_: list[str] = typer.Option([], "--set", help="Any config value, e.g. --set data.seed=1 (repeatable)."),
    overwrite: bool = typer.Option(False, help="Replace a cache of other data, backbone or weights in OUT."),
    max_batches: Optional[int] = typer.Option(None, min=1, help="Stop after N batches (run again to continue)."),
    verify: bool = typer.Option(False, help="First check every chunk of the cache in OUT against its checksum "
                                "(reads the whole file)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar."),
) -> None:
    """Run a frozen backbone once over a dataset; store its conv maps in OUT.

    The maps are float16 in a memory-mapped maps.npy, with header.json beside them. An
    interrupted cache is continued; a finished one is left as it is. Train on it with
    data.options.features=OUT and model.freeze_backbone=true."""
    from adah.config import Config
    from adah.errors import AdahError
    from adah.features.image_cache import extract_features

    cfg = Config.load(config).override({"model.image_backbone": backbone, "model.image_weights": weights,
                                        "data.root": data_root, **_parse_sets(set_)})
    out = out or (Path(cfg.data.options["features"]) if cfg.data.options.get("features") else None)
    if out is None:
        raise AdahError("name the cache folder with --out (or set data.options.features in the config)")
    check_output_folder(out)
    require_image_weights(cfg.model.image_backbone, cfg.model.image_weights)
    result = extract_features(cfg, out, batch_size=batch_size, device=device, overwrite=overwrite,
                              progress=not quiet, max_batches=max_batches, verify=verify)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return
    h = result.header
    shape = " x ".join(map(str, h["shape"]))
    if result.already_complete:
        checked = "; every chunk matches its checksum" if verify and h.get("chunk_sha256") is not None else ""
        typer.echo(f"{out}: complete already ({shape} {h['dtype']}, {h['backbone']} {h['weights_id']}){checked}; "
                   "nothing to do")
        return
    speed = f"{result.new_rows} images in {result.seconds:.1f}s ({result.images_per_second:.1f} images/s)"
    state = "complete" if result.complete else f"partial: {h['done']} of {h['shape'][0]} rows, run again to continue"
    typer.echo(f"{speed}; {out}: {shape} {h['dtype']} maps of {h['backbone']} {h['layer']}, {state}")
