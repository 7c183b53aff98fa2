"""Run configuration: small dataclasses, saved with every run and checkpoint.

Every choice the paper leaves open is a field here, with its default and reason listed in the
"Deviations and choices" in docs/method.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adah.errors import AdahError

ATTENTION_VARIANTS = ("none", "image", "text", "both")
NO_IMAGE_BACKBONE = "none"  # model.image_backbone for a text-only model
# Upper bounds on the sizes that set how much memory a model takes (ModelConfig.validate): far above
# any published setting (the paper: 16 to 128 bits; E_T's 8192 units; 448 px photos), low enough
# that a typo (model.bits=1000000) is refused with a message instead of exhausting memory.
MAX_BITS = 4096  # model.bits: code length
MAX_LAYER_SIZE = 65536  # each of model.text_hidden, model.image_fc_dims
MAX_IMAGE_SIZE = 4096  # model.image_size: input side in pixels
MAX_LR = 10.0  # train.lr, train.attention_lr: Adam moves each weight by about lr a step; above 10 it is noise
FLOAT32_MAX = 3.4028234663852886e38  # config numbers reach PyTorch as float32: larger ones are inf there


@dataclass
class ModelConfig:
    """Architecture. ``text_dim`` is set from the data when 0."""

    bits: int = 32  # code length, 1 to MAX_BITS (4096)
    attention: str = "both"  # none | image | text | both (the paper's Table 4)
    image_backbone: str = "small_cnn"  # a name in adah.models.backbones.list_backbones()
    image_weights: str | None = None  # backbone weights: None (random), "DEFAULT", or a file path
    freeze_backbone: bool = False  # backbone conv layers fixed (no gradient, BatchNorm in eval mode); cached maps need it
    image_fc_dims: tuple[int, ...] = (512, 512)  # fc6, fc7 when the backbone brings none
    mask_position: str = "before_pool"  # image mask on the conv maps before or after pool5
    image_size: int = 0  # input side in pixels, at most MAX_IMAGE_SIZE; 0: the backbone's default (set from the data)
    image_dim: int = 0  # feature size when images are given as vectors (backbone "mlp"; set from the data)
    text_dim: int = 0
    text_hidden: tuple[int, ...] = (8192, 1000)  # E_T: BoW -> 8192 -> 1000 (each at most MAX_LAYER_SIZE)
    dropout: float = 0.0
    text_encoder: str = "bow_mlp"  # E for text, a name in TEXT_ENCODERS: bow_mlp (the paper) | minilm (needs data.options.text_features)

    def validate(self) -> None:
        if not isinstance(self.text_encoder, str) or not self.text_encoder:
            raise AdahError(f"model.text_encoder must be a name in adah.models.text_encoders.TEXT_ENCODERS, "
                            f"got {self.text_encoder!r}")
        if not 0 < self.bits <= MAX_BITS:
            raise AdahError(f"model.bits must be an integer in [1, {MAX_BITS}] (the code length), got {self.bits}")
        if not 0 <= self.image_size <= MAX_IMAGE_SIZE:
            raise AdahError(f"model.image_size must be in [0, {MAX_IMAGE_SIZE}] pixels (0: the backbone's default), "
                            f"got {self.image_size}")
        if self.attention not in ATTENTION_VARIANTS:
            raise AdahError(f"model.attention must be one of {ATTENTION_VARIANTS}, got {self.attention!r}")
        if self.image_backbone == NO_IMAGE_BACKBONE and self.image_attention:
            raise AdahError(f"model.attention {self.attention!r} needs an image branch, but model.image_backbone is "
                            "'none' (text only); use attention 'text' or 'none'")
        if self.mask_position not in ("before_pool", "after_pool"):
            raise AdahError(f"model.mask_position must be 'before_pool' or 'after_pool', got {self.mask_position!r}")
        for name in ("text_hidden", "image_fc_dims"):
            dims = getattr(self, name)
            if not isinstance(dims, (tuple, list)) or not dims or any(
                    not isinstance(d, int) or not 0 < d <= MAX_LAYER_SIZE for d in dims):
                raise AdahError(f"model.{name} must be a non-empty list of layer sizes in [1, {MAX_LAYER_SIZE}], "
                                f"got {dims!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise AdahError(f"model.dropout must be in [0, 1), got {self.dropout}")

    @property
    def has_image_branch(self) -> bool:
        """False for a text-only model (``image_backbone='none'``: data without images)."""
        return self.image_backbone != NO_IMAGE_BACKBONE

    @property
    def image_attention(self) -> bool:
        return self.attention in ("image", "both")

    @property
    def text_attention(self) -> bool:
        return self.attention in ("text", "both")


@dataclass
class LossConfig:
    """Triplet ranking objective of Sec. 3.3."""

    margin: float = 0.25  # eps, in units of the code distance divided by sqrt(bits)
    distance: str = "euclidean"  # euclidean | squared (both divided by sqrt(bits) / bits)
    reduction: str = "mean_nonzero"  # mean over violated triplets | mean over all valid | sum
    adversarial_weight: float = 1.0  # weight of T->I_hat and I->T_hat in the E,D objective
    detach_adversarial_queries: bool = True  # G step moves only the unattended codes H_hat
    similarity: str = "labels"  # S of the triplets: labels (shared label) | pairs (same item) | both (adah.training.similarity)

    def validate(self) -> None:
        if self.margin < 0:
            raise AdahError(f"loss.margin must be >= 0, got {self.margin}")
        if self.distance not in ("euclidean", "squared"):
            raise AdahError(f"loss.distance must be 'euclidean' or 'squared', got {self.distance!r}")
        if self.reduction not in ("mean", "mean_nonzero", "sum"):
            raise AdahError(f"loss.reduction must be 'mean', 'mean_nonzero' or 'sum', got {self.reduction!r}")
        if self.adversarial_weight < 0:
            raise AdahError(f"loss.adversarial_weight must be >= 0, got {self.adversarial_weight}")
        if self.similarity not in ("labels", "pairs", "both"):
            raise AdahError(f"loss.similarity must be 'labels', 'pairs' or 'both', got {self.similarity!r}")


@dataclass
class TrainConfig:
    """Optimisation: Adam(lr 2e-4, beta1 0.5), batch 64, lr/10 every 20 epochs; the paper's 4 E/D : 1 G
    steps (``--preset paper``); adah's default trains no G step (docs/research/study-of-g.md)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 2e-4  # both in (0, MAX_LR]
    attention_lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    lr_step_epochs: int = 20
    lr_gamma: float = 0.1
    steps_min: int = 4  # E,D steps (minimise the full objective) per cycle
    steps_max: int = 0  # G steps (maximise the adversarial terms) per cycle; 0: G fixed (adah's default; paper: 1)
    g_batches: str = "own"  # own: a G step takes its own batch (E,D see 4 of 5) | shared: on E,D's last batch
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False  # bf16 autocast on CUDA; ignored on the CPU
    eval_every: int = 1  # epochs between validation MAP evaluations (0: only at the end)
    max_batches_per_epoch: int = 0  # 0: full epoch; >0 caps it (smoke tests)
    # 0: an epoch is one pass over the training pairs. >0: each epoch makes as many passes as it takes
    # for `epochs` epochs to give at least this many optimiser steps (the photo configs: 1000, so a
    # collection of 64 pairs trains 1000 steps, not 40; docs/research/study-of-g.md, enough optimiser steps)
    min_steps: int = 0
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    keep_checkpoints: int = 3  # resumable checkpoints kept in run_dir/checkpoints (newest)
    progress: bool = True
    method: str = "adah"  # training method (adah.methods.METHODS): adah (ADAH and its ablations) | dcmh | djsrh | ssah
    method_options: dict[str, Any] = field(default_factory=dict)  # the method's own hyper-parameters (docs/methods.md)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "lr_step_epochs", "steps_min"):
            if getattr(self, name) <= 0:
                raise AdahError(f"train.{name} must be a positive integer, got {getattr(self, name)}")
        if self.keep_checkpoints < 1 or self.checkpoint_every < 0:
            raise AdahError("train.keep_checkpoints must be >= 1 and train.checkpoint_every >= 0")
        if self.g_batches not in ("own", "shared"):
            raise AdahError(f"train.g_batches must be 'own' or 'shared', got {self.g_batches!r}")
        if self.steps_max < 0:
            raise AdahError(f"train.steps_max must be >= 0, got {self.steps_max}")
        if self.min_steps < 0:
            raise AdahError(f"train.min_steps must be >= 0 (0: one pass over the data an epoch), got {self.min_steps}")
        if self.batch_size < 2:
            raise AdahError(f"train.batch_size must be at least 2 to form triplets, got {self.batch_size}")
        if not (0 < self.lr <= MAX_LR and 0 < self.attention_lr <= MAX_LR):
            raise AdahError(f"train.lr and train.attention_lr must be in (0, {MAX_LR}], got {self.lr} and "
                            f"{self.attention_lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise AdahError(f"train.betas must be two numbers in [0, 1), got {self.betas}")


G_OBJECTIVES = ("adversarial", "full")
ATTENTION_MASKS = ("hard", "soft", "weight")
IMAGE_POSITIONS = ("cells", "channels")
IMAGE_REGIONS = ("all", "salient")
ATTENTION_INITS = ("random", "zero", "saliency")


@dataclass
class AttentionConfig:
    """G's choices that the paper leaves open (used when ``model.attention`` is not ``none``).

    The defaults are the ``adah`` preset, adah's erasing G over all positions; the bundled photo
    configs add ``image_region = "salient"`` and ``rescale`` (the ``salient_erase`` preset, the
    study's erasing inside the object: docs/research/study-of-g.md); the ``paper`` preset
    (:data:`PRESETS`, ``--preset paper``) restores the paper's literal G."""

    gate: str = "softmax"  # a name in adah.models.gates.GATES: softmax over positions (paper) | sigmoid: one gate per position
    temperature: float = 1.0  # scores / temperature before the gate
    noise: float = 0.0  # s > 0: s * Gumbel noise on the scores in training (a fresh mask each step)
    threshold: float = 1.0  # c: alpha = c/N (softmax; the paper's 1/N), c/2 (sigmoid)
    keep_fraction: float = 0.5  # > 0: keep the top ceil(rho*N) positions of each item instead of a threshold
    init: str = "random"  # score layer: random (PyTorch default) | zero (p uniform: all attended at start) | saliency
    residual: float = 1.0  # lam: attended = f*(lam + (1-lam)Z); 0 = the paper's Z*f, 1 = D hashes f
    mask: str = "hard"  # hard: binary Z, straight-through gradient (paper) | soft: clamp(p*N, 0, 1) | weight: p*N (mean 1)
    soft_epochs: int = 0  # epochs with a soft mask (clamp(p*N, 0, 1) or sigmoid p) before the hard STE mask
    warmup_epochs: int = 0  # epochs of E,D alone before G's first step
    objective: str = "adversarial"  # G maximises the adversarial terms | full: also minimises the attended terms
    grad_clip: float = 0.0  # max gradient norm of G's step (0: none)
    rescale: bool = False  # divide attended/unattended by the mean of their mask (an erased view keeps f's scale)
    image_positions: str = "cells"  # the image mask is over the map's cells (paper: where) | channels (what)
    image_region: str = "all"  # the cells G's mask splits: all (paper) | salient: those above the mean activation (SCDA)

    def validate(self) -> None:
        if not isinstance(self.gate, str) or not self.gate:  # the name: adah.models.gates.GATES, when G is built
            raise AdahError(f"attention.gate must be the name of a gate (softmax, sigmoid, ...), got {self.gate!r}")
        if self.init not in ATTENTION_INITS:
            raise AdahError(f"attention.init must be one of {ATTENTION_INITS}, got {self.init!r}")
        if self.mask not in ATTENTION_MASKS:
            raise AdahError(f"attention.mask must be one of {ATTENTION_MASKS}, got {self.mask!r}")
        if self.objective not in G_OBJECTIVES:
            raise AdahError(f"attention.objective must be one of {G_OBJECTIVES}, got {self.objective!r}")
        if self.noise < 0:
            raise AdahError(f"attention.noise must be >= 0 (0: off), got {self.noise}")
        if self.temperature <= 0 or self.threshold <= 0:
            raise AdahError("attention.temperature and attention.threshold must be positive")
        if not 0.0 <= self.keep_fraction <= 1.0:
            raise AdahError(f"attention.keep_fraction must be in [0, 1] (0: use the threshold), got {self.keep_fraction}")
        if not 0.0 <= self.residual <= 1.0:
            raise AdahError(f"attention.residual must be in [0, 1], got {self.residual}")
        for name in ("soft_epochs", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise AdahError(f"attention.{name} must be >= 0, got {getattr(self, name)}")
        if self.grad_clip < 0:
            raise AdahError(f"attention.grad_clip must be >= 0 (0: off), got {self.grad_clip}")
        if not isinstance(self.rescale, bool):
            raise AdahError(f"attention.rescale must be true or false, got {self.rescale!r}")
        if self.image_positions not in IMAGE_POSITIONS:
            raise AdahError(f"attention.image_positions must be one of {IMAGE_POSITIONS}, got {self.image_positions!r}")
        if self.image_region not in IMAGE_REGIONS:
            raise AdahError(f"attention.image_region must be one of {IMAGE_REGIONS}, got {self.image_region!r}")
        if self.image_region == "salient" and self.image_positions != "cells":
            raise AdahError("attention.image_region='salient' splits the map's cells; it needs "
                            "attention.image_positions='cells'")


@dataclass
class DataConfig:
    """Which dataset and protocol. ``name='scenes'`` generates the built-in synthetic set."""

    name: str = "scenes"
    root: str = ""  # data root for real datasets; "" means $ADAH_DATA, then ../shared/data
    num_items: int = 3000
    num_query: int = 300
    num_train: int = 2000
    val_fraction: float = 0.1
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # dataset-specific (e.g. scenes noise)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    def validate(self) -> "Config":
        for section in dataclasses.fields(self):  # a Config built in Python, not parsed by from_dict
            values = dataclasses.asdict(getattr(self, section.name))
            for name, value in values.items():
                check_finite(value, f"{section.name}.{name}")
        self.model.validate()
        self.loss.validate()
        self.train.validate()
        self.attention.validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "Config":
        if not isinstance(raw, dict):
            raise AdahError(f"{source}: expected a JSON object at the top level")
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise AdahError(f"{source}: unknown section(s) {sorted(unknown)}; expected model, loss, train, data, attention")
        parts = {}
        for f in dataclasses.fields(cls):
            section_cls = SECTIONS[f.name]
            parts[f.name] = _section_from_dict(section_cls, raw.get(f.name, {}), f"{source}: section '{f.name}'")
        return cls(**parts)

    @classmethod
    def load(cls, path: str | Path, preset: str | None = None) -> "Config":
        """Read a JSON config file, or a bundled one by name (see :func:`bundled_configs`);
        ``preset`` (a name in :data:`PRESETS`) then replaces G's settings."""
        config = cls._load(path)
        return config.with_preset(preset) if preset else config

    def with_preset(self, name: str) -> "Config":
        """A copy with the preset's settings (``paper``: the paper's literal G)."""
        if name not in PRESETS:
            raise AdahError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return self.override(PRESETS[name])

    @classmethod
    def _load(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file() and path.suffix == "" and str(path) in bundled_configs():
            path = BUNDLED_DIR / f"{path}.json"
        if not path.is_file():
            raise AdahError(f"config file not found: {path} (bundled configs: {', '.join(bundled_configs())})")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AdahError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(raw, source=str(path))

    def override(self, dotted: dict[str, Any]) -> "Config":
        """Return a copy with ``{"train.epochs": 5, ...}`` applied (None values are skipped: a flag
        not given). ``data.options.KEY`` sets one reader option, keeping the others (likewise
        ``train.method_options.KEY``); there None is applied (``--set data.options.features=null``:
        no feature cache, the reader's default)."""
        raw = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            table, _, option = name.partition(".")
            if (section, table) in (("data", "options"), ("train", "method_options")) and option:
                raw[section][table] = {**(raw[section].get(table) or {}), option: value}
                continue
            if value is None:
                continue
            if section not in raw or name not in raw[section]:
                raise AdahError(f"unknown config key {key!r}")
            raw[section][name] = value
        return Config.from_dict(raw)


SECTIONS = {"model": ModelConfig, "loss": LossConfig, "train": TrainConfig, "data": DataConfig,
            "attention": AttentionConfig}

# The paper's G, literally: softmax over positions, alpha = 1/N, hard mask from the first step,
# D hashes Z*f, G maximises the adversarial terms from the start, 4 E,D steps : 1 G step, each on
# its own batch, E,D minimising the adversarial terms at full weight.
PAPER_ATTENTION = {"attention.gate": "softmax", "attention.temperature": 1.0, "attention.noise": 0.0,
                   "attention.threshold": 1.0,
                   "attention.keep_fraction": 0.0, "attention.init": "random", "attention.residual": 0.0,
                   "attention.mask": "hard", "attention.soft_epochs": 0, "attention.warmup_epochs": 0,
                   "attention.objective": "adversarial", "attention.grad_clip": 0.0, "attention.rescale": False,
                   "attention.image_positions": "cells", "attention.image_region": "all",
                   "train.steps_min": 4, "train.steps_max": 1, "train.g_batches": "own",
                   "loss.adversarial_weight": 1.0}
# a new field of G must say what the paper's value is, never fall back to adah's default
assert {f"attention.{f.name}" for f in dataclasses.fields(AttentionConfig)} <= set(PAPER_ATTENTION), \
    "PAPER_ATTENTION must name every AttentionConfig field"
# adah's erasing G (the study variant ``erase_fixed_g``; on the image branch alone, the bundled
# photo configs' G before they moved to erasing inside the object: ``erase_fixed_g_image``): the
# AttentionConfig defaults, D hashes f, the adversarial terms train E,D on the half of the
# positions G's fixed, randomly initialised scores leave out; G takes no step
ADAH_ATTENTION = {f"attention.{f.name}": f.default for f in dataclasses.fields(AttentionConfig)}
ADAH_ATTENTION.update({"train.steps_min": 4, "train.steps_max": 0, "train.g_batches": "own",
                       "loss.adversarial_weight": 1.0})
# attention pooling (the study variant ``pool_full_w0_shared``; on the text branch alone in the
# bundled scenes_demo and wiki configs: ``attention_pool_text``): a
# zero-initialised G (it starts as none) whose softmax p weights the positions by p*N (mean 1, may
# exceed 1); G's steps, on E,D's batch, minimise the attended terms and maximise the adversarial
# terms on the positions weighted below average; E,D train on the attended codes only
POOL_ATTENTION = {**PAPER_ATTENTION, "attention.mask": "weight", "attention.init": "zero",
                  "attention.objective": "full", "train.g_batches": "shared", "loss.adversarial_weight": 0.0}
# erasing inside the object (the study variant ``salient_erase_fixed_g_image``; the bundled
# photo configs on the image branch at 448 px): adah's erasing G over each photo's salient cells
# (SCDA's rule), rescaled: D hashes the mean of the salient cells, the adversarial terms train E,D
# on the half of them G's fixed, randomly initialised scores leave out
SALIENT_ERASE_ATTENTION = {**ADAH_ATTENTION, "attention.image_region": "salient", "attention.rescale": True}
PRESETS: dict[str, dict[str, Any]] = {"paper": PAPER_ATTENTION, "adah": ADAH_ATTENTION,
                                      "attention_pool": POOL_ATTENTION, "salient_erase": SALIENT_ERASE_ATTENTION}
# every preset names the same keys, so applying one after another leaves nothing of the first
assert all(set(p) == set(PAPER_ATTENTION) for p in PRESETS.values()), "presets must name the same keys"

BUNDLED_DIR = Path(__file__).parent / "configs"


def bundled_configs() -> list[str]:
    """Names of the configs shipped in ``adah/configs`` (usable as ``--config NAME``)."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.json"))


def _section_from_dict(section_cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise AdahError(f"{where} must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise AdahError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(fields)}")
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(getattr(section_cls(), name), value, f"{where}: key '{name}'")
    return section_cls(**values)


def check_finite(value: Any, where: str) -> None:
    """AdahError when ``value`` (a number, or numbers inside lists and objects) is NaN, infinite
    or too large for float32 (what PyTorch computes in).

    Run on numbers after they are parsed: JSON's ``NaN`` and ``Infinity``, and ``1e400``, which
    parses to inf, would otherwise pass checks such as ``lr > 0`` and train an all-NaN model."""
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        raise AdahError(f"{where} must be a finite number (at most {FLOAT32_MAX:.4g} in size: float32), "
                        f"got {value!r}")
    if isinstance(value, (list, tuple)):
        for v in value:
            check_finite(v, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{where}.{k}")


def _coerce(default: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the type of the field's default; JSON lists become tuples; numbers
    must be finite (:func:`check_finite`)."""
    check_finite(value, where)
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(is_num(v) for v in value):
            raise AdahError(f"{where} must be a list of numbers, got {value!r}")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise AdahError(f"{where} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if not is_int(value):
            raise AdahError(f"{where} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if not is_num(value):
            raise AdahError(f"{where} must be a number, got {value!r}")
        return float(value)
    elif isinstance(default, dict) and not isinstance(value, dict):
        raise AdahError(f"{where} must be a JSON object, got {value!r}")
    elif isinstance(default, str) and not isinstance(value, str):
        raise AdahError(f"{where} must be a string, got {value!r}")
    return value

