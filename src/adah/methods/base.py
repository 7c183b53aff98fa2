"""What a training method is to the trainer: a :class:`MethodSpec` in :data:`METHODS` and, for
every method but ``adah`` (the trainer's own ADAH objective), a :class:`Method` the trainer calls
through three hooks:

* ``step(rows, images, texts, labels)``: one optimisation step on a batch (``rows``: the batch's
  row numbers in the data), returning each logged number by name (``objective`` among them);
* ``end_epoch()``: work done once an epoch (DCMH's text-net pass and closed-form B update), numbers to log;
* ``set_epoch(epoch)``: the learning rates of the epoch about to run;

plus ``state_dict`` / ``load_state_dict`` (optimizers, buffers) so a resumed run continues exactly.
A step runs the model's branches through :attr:`Method.branches` on the ``images`` it is given: the
trainer's model over the data's images, or on the fast path (:mod:`adah.training.precomputed`:
cached maps, a frozen backbone, no attention) the same parameters over pooled vectors computed once
per item; the method computes the same thing either way and never needs to know which path runs.
The model is the trainer's :class:`adah.models.ADAH` without attention (the same image backbones and
text MLP as ADAH), so checkpoints, evaluation, indexes and the service work unchanged; a method may
hold extra networks (SSAH's label network and discriminators) in its state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from adah.errors import AdahError
from adah.training.trainer import TrainResult
from adah.training.trainer import train as _train
from adah.utils.registry import Registry


@dataclass(frozen=True)
class MethodSpec:
    """``build(trainer) -> Method`` (None: the trainer's own ADAH objective); ``defaults``: the
    dotted config values ``--method NAME`` sets (the paper's batch size, no attention), before the
    user's ``--set``; ``options``: the dataclass of ``train.method_options`` and its defaults."""

    title: str
    build: Callable[[Any], "Method"] | None
    defaults: dict[str, Any] = field(default_factory=dict)
    options: type | None = None


METHODS: Registry[MethodSpec] = Registry("training method", key="train.method")


def method_overrides(name: str) -> dict[str, Any]:
    """The dotted config values that select method ``name`` with its published defaults."""
    return {**METHODS.get(name).defaults, "train.method": name}


def parse_options(spec_name: str, options_cls: type, raw: dict) -> Any:
    """``train.method_options`` -> the method's options dataclass; unknown keys and wrong types
    are AdahErrors naming the key and the choices."""
    known = {f.name: f for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise AdahError(f"train.method_options: unknown key(s) {unknown} for method {spec_name!r}; "
                        f"known: {sorted(known)}")
    values = {}
    for name, value in raw.items():
        default = getattr(options_cls(), name)
        is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, float):
            if not is_num:
                raise AdahError(f"train.method_options.{name} must be a number, got {value!r}")
            value = float(value)
        elif isinstance(default, int) and not (is_num and float(value).is_integer()):
            raise AdahError(f"train.method_options.{name} must be an integer, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise AdahError(f"train.method_options.{name} must be a string, got {value!r}")
        value = int(value) if isinstance(default, int) else value
        values[name] = value
    opts = options_cls(**values)
    check = getattr(opts, "validate", None)
    if check is not None:
        check()
    return opts


def make_optimizer(kind: str, params: list, lr: float, *, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``sgd`` (with ``momentum``) or ``adam`` over ``params``."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise AdahError(f"train.method_options.optimizer must be 'sgd' or 'adam', got {kind!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class LayerTap:
    """The ``input`` or ``output`` of a layer at the first call of a forward: the semantic features
    under a hash layer (SSAH), the linear outputs before tanh (DCMH). A branch calls its hash head
    twice, on the attended features and then on the unattended ones (zeros without attention), so
    ``output_of(forward)`` clears the record, runs ``forward`` and returns the first call's value."""

    def __init__(self, layer: torch.nn.Module, which: str) -> None:
        self.values: list[torch.Tensor] = []
        self.which = which
        layer.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.values.append(inputs[0] if self.which == "input" else output)

    def output_of(self, forward: Callable[[], Any]) -> tuple[Any, torch.Tensor]:
        """``(forward(), the layer's first input/output during it)``."""
        self.values = []
        result = forward()
        value, self.values = self.values[0], []
        return result, value


class Method:
    """Base of the deep baselines: the trainer, its model split into image and text parameters,
    and the training rows' positions (row number in the data -> position in the training split)."""

    name = ""
    uses_image_features = False  # True: steps call branches.image_features (the fast path then keeps them too)

    def __init__(self, trainer: Any, options: Any) -> None:
        self.trainer = trainer
        self.opts = options
        self.model = trainer.model
        self.device = trainer.device
        cfg = trainer.config
        if trainer.dist.enabled:
            raise AdahError(f"train.method {self.name!r} keeps per-item buffers of the whole training set and "
                            "is not written for several processes; run it in one process")
        if cfg.model.attention != "none":
            raise AdahError(f"train.method {self.name!r} trains no attention; set model.attention=none "
                            f"(--method {self.name} does), got {cfg.model.attention!r}")
        if not cfg.model.has_image_branch:
            raise AdahError(f"train.method {self.name!r} is cross-modal: it needs an image branch and images")
        train = np.asarray(trainer.split.train)
        self.train_rows = train
        self.position = np.full(len(trainer.data), -1, dtype=np.int64)
        self.position[train] = np.arange(len(train))
        hashing = {id(p) for p in self.model.hashing_parameters()}
        self.image_params = [p for p in self.model.image.parameters() if id(p) in hashing]
        self.text_params = [p for p in self.model.text.parameters() if id(p) in hashing]

    @property
    def branches(self) -> torch.nn.Module:
        """The branches as the trainer runs them (:attr:`adah.training.trainer.Trainer.branches`), to
        call on a step's ``images``: ``branches.image(images)`` (the image BranchOutput),
        ``branches(images, texts)`` (both), ``branches.image_features(images)`` (the images' own
        features, with :attr:`uses_image_features`). The hash layers are the model's either way."""
        return self.trainer.branches

    def hash_layer(self, modality: str) -> torch.nn.Module:
        """The last linear layer of a branch's hash head (its output then goes through tanh)."""
        branch = self.model.image if modality == "image" else self.model.text
        fc = getattr(getattr(branch, "hash", None), "fc", None)
        if not isinstance(fc, torch.nn.Linear):
            raise AdahError(f"train.method {self.name!r} needs adah's hash head on the {modality} branch "
                            "(model.text_encoder='bow_mlp' for text)")
        return fc

    def check_finite(self, loss: torch.Tensor, what: str) -> None:
        """A NaN or infinite loss is an error naming the method and the setting to lower."""
        if not torch.isfinite(loss):
            raise AdahError(f"train.method {self.name!r}: the {what} loss is {float(loss.detach())} at epoch "
                            f"{self.trainer.epoch + 1}, step {self.trainer.step}; the training diverged: lower "
                            "the learning rate (train.method_options, docs/methods.md)")

    def positions(self, rows: np.ndarray) -> torch.Tensor:
        """Positions of data rows in the training split, as a tensor on the device."""
        return torch.from_numpy(self.position[np.asarray(rows)]).to(self.device)

    def train_labels(self) -> torch.Tensor:
        """(n_train, C) float labels of the training rows, on the device."""
        labels = np.asarray(self.trainer.data.labels[self.train_rows], dtype=np.float32)
        return torch.from_numpy(labels).to(self.device)

    # -- hooks -------------------------------------------------------------------------------
    def step(self, rows: np.ndarray, images, texts, labels) -> dict[str, float]:
        raise NotImplementedError

    def end_epoch(self) -> dict[str, float]:
        return {}

    def set_epoch(self, epoch: int) -> None:
        """Learning rates for epoch ``epoch`` (0-based); called before each epoch and on resume."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def build_method(trainer: Any) -> Method | None:
    """The Method of ``trainer.config.train.method`` (None for ``adah``: the trainer's own steps)."""
    tc = trainer.config.train
    spec = METHODS.get(tc.method)
    if spec.build is None:
        if tc.method_options:
            raise AdahError(f"train.method_options {sorted(tc.method_options)} given, but train.method "
                            f"{tc.method!r} takes none (its settings are the loss and attention sections)")
        return None
    return spec.build(trainer)


def train(config: Any, data: Any, split: Any, run_dir: Any, *, resume: bool = False,
          diagnostics: tuple = ()) -> TrainResult:
    """Train ``config.train.method`` (``adah``: ADAH itself) through adah's trainer; the same
    arguments and result as :func:`adah.training.train`."""
    return _train(config, data, split, run_dir, resume=resume, diagnostics=diagnostics, method=build_method)

