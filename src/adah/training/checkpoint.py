"""Checkpoints: model + config + epoch, and whatever trainer state is passed (optimizers,
counters, RNG states), written atomically, with a sha256 of the payload (:func:`payload_digest`:
every tensor's bytes, every value) checked on load, so a flipped byte is refused by name
(:class:`CheckpointDamaged`) instead of loaded.

Resume: a run's resumable checkpoints (``run_dir/checkpoints/step-N.pt``, :func:`write_resumable`,
:func:`list_checkpoints`), every RNG state (:func:`capture_rng`, :func:`restore_rng`) and the
checks that a checkpoint belongs to this run (:func:`read_resumable`, :func:`check_resume_config`).
The trainer decides what state goes in (:meth:`adah.training.trainer.Trainer.save_resumable`)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import random
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from adah.config import PRESETS, Config
from adah.data.vocab import Vocabulary
from adah.errors import AdahError
from adah.utils.fileio import atomic_torch_save
from adah.models import ADAH, build_model

FORMAT_VERSION = 1
DIGEST_KEY = "sha256"


class CheckpointDamaged(AdahError):
    """A checkpoint file that cannot be read or whose payload does not match its sha256."""


def payload_digest(payload: dict) -> str:
    """sha256 over a checkpoint payload (without its ``sha256`` entry): keys, types, and every
    tensor's and array's dtype, shape and bytes, so it does not depend on how torch serialized it."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != DIGEST_KEY})
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"A{a.dtype.str}{a.shape}|".encode())
        h.update(a.tobytes() if a.dtype != object else pickle.dumps(a.tolist()))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}|".encode())
        for item in obj:
            _feed(h, item)
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, np.generic)):
        h.update(f"{type(obj).__name__}:{obj!r}|".encode())
    else:
        h.update(pickle.dumps(obj))


def save_checkpoint(path: str | Path, *, model: ADAH, config: Config, epoch: int, **state: Any) -> None:
    """Write ``{"format", "config", "epoch", "model", **state, "sha256"}`` (optimizer state dicts,
    step counters, history, metrics) to ``path`` through a temporary file + fsync + rename."""
    payload = {"format": FORMAT_VERSION, "config": config.to_dict(), "epoch": epoch, "model": model.state_dict()}
    payload.update(state)
    payload[DIGEST_KEY] = payload_digest(payload)
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read and check a checkpoint file; raises AdahError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise AdahError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files
        raise CheckpointDamaged(f"{path}: not a readable adah checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise AdahError(f"{path}: not an adah checkpoint (missing 'model' or 'config')")
    if payload.get("format") != FORMAT_VERSION:
        raise AdahError(f"{path}: checkpoint format {payload.get('format')!r}, this adah reads {FORMAT_VERSION}")
    if DIGEST_KEY in payload and payload[DIGEST_KEY] != payload_digest(payload):  # older files have none
        raise CheckpointDamaged(f"{path}: damaged checkpoint, its payload does not match the sha256 stored in it; "
                                "use another checkpoint (or train again)")
    return payload


def load_newest(paths: list[Path], load: Callable[[Path], Any]) -> Path:
    """``load(path)`` for the newest of ``paths`` that is not damaged, going back one at a time
    and saying so on stderr; returns the path used. CheckpointDamaged when every one is."""
    first = None
    for k, path in enumerate(reversed(paths)):
        try:
            load(path)
        except CheckpointDamaged as exc:
            first = first or exc
            older = paths[-k - 2] if k + 1 < len(paths) else None
            print(f"warning: {exc}" + (f"; falling back to the previous checkpoint {older}" if older else ""),
                  file=sys.stderr, flush=True)
            continue
        return path
    raise first


def text_vocabulary_of(payload: dict, source: str = "checkpoint") -> Vocabulary | None:
    """The Vocabulary a checkpoint's model reads text with (saved by the trainer from the training
    data), or None when the training data carried no words (DCMH .mat, Wiki)."""
    raw = payload.get("text_vocabulary")
    return None if raw is None else Vocabulary.from_dict(raw, source=f"{source} (text_vocabulary)")


def config_of(payload: dict, source: str = "checkpoint") -> Config:
    """The run config saved in a checkpoint. A key the checkpoint's config lacks (it was written
    before the key existed) takes the ``paper`` preset's value where the preset names it, since
    adah trained the paper's literal G until then; the keys it holds are kept as they are."""
    raw = payload["config"]
    config = Config.from_dict(raw, source=f"{source} (config)")
    missing = {k: v for k, v in PRESETS["paper"].items()
               if k.split(".", 1)[1] not in (raw.get(k.split(".", 1)[0]) or {})}
    return config.override(missing) if missing else config


def load_model(path: str | Path, device: str | torch.device = "cpu", *,
               lazy_image: bool = False) -> tuple[ADAH, Config, dict]:
    """Rebuild the model a checkpoint describes, load its weights; returns (model in eval mode,
    config, raw payload). ``lazy_image``: the image branch (its backbone: torchvision) is built
    on first use (:class:`LazyImageBranch`), so that a text query never pays for it."""
    payload = load_checkpoint(path)
    config = config_of(payload, str(path))
    # the weights come from the checkpoint: never fetch pretrained backbone weights again
    cfg = dataclasses.replace(config.model, image_weights=None)
    lazy = lazy_image and cfg.has_image_branch
    state = payload["model"]
    if lazy:
        text_only = dataclasses.replace(cfg, image_backbone="none", attention="text" if cfg.text_attention else "none")
        model = build_model(text_only, config.attention)
        state = {k: v for k, v in state.items() if not k.startswith(LazyImageBranch.PREFIX)}
    else:
        model = build_model(cfg, config.attention)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise AdahError(f"{path}: weights do not fit the model its config describes: {exc}") from None
    if lazy:
        model.cfg = cfg
        model.image = LazyImageBranch(model, cfg, config.attention, payload["model"])
    return model.to(device).eval(), config, payload


class LazyImageBranch:
    """Stands in for a loaded model's image branch until it is used: the first attribute read or
    call builds the branch, loads its weights, puts it in the model (on the model's device and
    mode) and answers from it. ``pending_state``: its weights meanwhile (``image.*`` keys), which
    :func:`adah.index.build.model_fingerprint` counts as the model's."""

    PREFIX = "image."

    def __init__(self, owner: ADAH, cfg, attention, state: dict) -> None:
        self._owner, self._cfg, self._attention = owner, cfg, attention
        self.pending_state = {k: v for k, v in state.items() if k.startswith(self.PREFIX)}
        self._lock = threading.Lock()  # several request threads may ask for it at once: built once
        self._branch = None

    def materialise(self) -> torch.nn.Module:
        from adah.models.adah import ImageBranch

        with self._lock:
            if self._branch is not None:
                return self._branch
            owner = self._owner
            branch = ImageBranch(self._cfg, self._attention)
            branch.load_state_dict({k[len(self.PREFIX):]: v for k, v in self.pending_state.items()})
            param = next(owner.parameters(), None)
            branch.to(param.device if param is not None else "cpu").train(owner.training)
            owner.__dict__.pop("image", None)  # a plain attribute until now; the branch becomes a submodule
            owner.image = branch
            self._branch = branch
            return branch

    def __getattr__(self, name: str):
        return getattr(self.materialise(), name)

    def __call__(self, *args, **kwargs):
        return self.materialise()(*args, **kwargs)


# -- resume ------------------------------------------------------------------------------------
# config fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"train.epochs", "train.progress", "train.device", "train.eval_every",
                     "train.checkpoint_every", "train.keep_checkpoints"}


def check_resume_config(saved: Config, current: Config, path: Path) -> None:
    """Refuse to resume when anything but RESUMABLE_CHANGES differs; name the differing keys."""
    a, b = saved.to_dict(), current.to_dict()
    diff = [f"{sec}.{k}: {a[sec][k]!r} -> {b[sec][k]!r}" for sec in a for k in a[sec]
            if a[sec][k] != b[sec].get(k) and f"{sec}.{k}" not in RESUMABLE_CHANGES]
    if diff:
        raise AdahError(f"{path}: checkpoint config differs from this run's: {'; '.join(diff)}")


def capture_rng(data_gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "data": data_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, data_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    data_gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Resumable checkpoints of a run, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("step-*.pt"))


def link_atomically(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` (a hard link, else a copy), replacing it atomically."""
    tmp = dst.with_name(f".{dst.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def write_resumable(run_dir: str | Path, *, keep: int, model: ADAH, config: Config, epoch: int, step: int,
                    **state: Any) -> Path:
    """Save a resumable checkpoint ``run_dir/checkpoints/step-N.pt`` (:func:`save_checkpoint`),
    point ``run_dir/last.pt`` at it and keep only the newest ``keep`` of them; returns its path."""
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / f"step-{step:09d}.pt"
    save_checkpoint(path, model=model, config=config, epoch=epoch, step=step, **state)
    link_atomically(path, run_dir / "last.pt")
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_resumable(path: Path, config: Config, split_sha256: str, data_fingerprint: Any) -> dict:
    """A resumable checkpoint's payload, refused (AdahError naming ``path``) when it was trained
    with another config (:func:`check_resume_config`), on another split or on other data."""
    payload = load_checkpoint(path)
    check_resume_config(config_of(payload, str(path)), config, path)
    if payload.get("split_sha256") != split_sha256:
        raise AdahError(f"{path}: the checkpoint was trained on another split (split.json differs)")
    if payload.get("data_fingerprint") != data_fingerprint:
        raise AdahError(f"{path}: the checkpoint was trained on different data")
    return payload
