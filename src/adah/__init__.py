"""adah: attention-aware deep adversarial cross-modal hashing (Zhang, Lai, Feng, ECCV 2018).

    from adah import Config, make_scenes, make_split, train, encode, evaluate_codes, build_index, Index
"""

from adah.training.checkpoint import load_model
from adah.config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from adah.data import CrossModalData, Split, random_split
from adah.data.registry import make_split
from adah.features.dataset import load_dataset
from adah.data.scenes import ScenesConfig, make_scenes
from adah.errors import AdahError
from adah.utils.version import VERSION
from adah.evaluation.retrieval import Codes, RetrievalReport, encode, evaluate_codes
from adah.index import Index, build_index
from adah.evaluation.metrics import mean_average_precision, pr_curve_by_radius, precision_at_k, recall_at_k
from adah.models import ADAH, build_model
from adah.training import TrainResult, Trainer, train

__version__ = VERSION

# ``adah.metrics`` is documented as the metrics module since 0.1; it lives in adah.evaluation now
import sys as _sys

from adah.evaluation import metrics

_sys.modules.setdefault("adah.metrics", metrics)

__all__ = [
    "ADAH", "AdahError", "Codes", "Config", "CrossModalData", "DataConfig", "Index", "LossConfig", "ModelConfig",
    "RetrievalReport", "ScenesConfig", "Split", "TrainConfig", "TrainResult", "Trainer", "build_index", "build_model",
    "encode", "evaluate_codes", "load_dataset", "load_model", "make_scenes", "make_split", "mean_average_precision", "metrics",
    "pr_curve_by_radius", "precision_at_k", "random_split", "recall_at_k", "train",
]
