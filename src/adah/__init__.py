"""adah: attention-aware deep adversarial cross-modal hashing (Zhang, Lai, Feng, ECCV 2018).

    from adah import Config, make_scenes, make_split, train, encode, evaluate_codes, build_index, Index
    from adah import fit                      # adah fit from Python: fit("photos/", "runs/mine")
    index = Index.load("runs/mine/index")     # then index.search_text("a dog") / index.search_image("q.jpg")

Every name is imported on first use (module ``__getattr__``), so ``import adah`` and the
command line start without torch until a command needs it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys as _sys

from adah.utils.version import VERSION

__version__ = VERSION

# public name -> (module, attribute); attribute None: the module itself
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "ADAH": ("adah.models", "ADAH"), "build_model": ("adah.models", "build_model"),
    "AdahError": ("adah.errors", "AdahError"),
    "Codes": ("adah.evaluation.retrieval", "Codes"), "RetrievalReport": ("adah.evaluation.retrieval", "RetrievalReport"),
    "encode": ("adah.evaluation.retrieval", "encode"), "evaluate_codes": ("adah.evaluation.retrieval", "evaluate_codes"),
    "Config": ("adah.config", "Config"), "DataConfig": ("adah.config", "DataConfig"),
    "LossConfig": ("adah.config", "LossConfig"), "ModelConfig": ("adah.config", "ModelConfig"),
    "TrainConfig": ("adah.config", "TrainConfig"),
    "CrossModalData": ("adah.data", "CrossModalData"), "Split": ("adah.data", "Split"),
    "random_split": ("adah.data", "random_split"),
    "load_dataset": ("adah.features.dataset", "load_dataset"), "make_split": ("adah.data.registry", "make_split"),
    "ScenesConfig": ("adah.data.scenes", "ScenesConfig"), "make_scenes": ("adah.data.scenes", "make_scenes"),
    "Index": ("adah.index", "Index"), "SearchResult": ("adah.index", "SearchResult"),
    "build_index": ("adah.index", "build_index"),
    "mean_average_precision": ("adah.evaluation.metrics", "mean_average_precision"),
    "pr_curve_by_radius": ("adah.evaluation.metrics", "pr_curve_by_radius"),
    "precision_at_k": ("adah.evaluation.metrics", "precision_at_k"),
    "recall_at_k": ("adah.evaluation.metrics", "recall_at_k"),
    "metrics": ("adah.evaluation.metrics", None),
    "load_model": ("adah.training.checkpoint", "load_model"),
    "TrainResult": ("adah.training", "TrainResult"), "Trainer": ("adah.training", "Trainer"),
    "train": ("adah.training", "train"),
    "fit": ("adah.recipes.fit", "fit_folder"), "fit_folder": ("adah.recipes.fit", "fit_folder"),
    "FitResult": ("adah.recipes.fit", "FitResult"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'adah' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _ModuleAlias:  # a meta path finder and loader (importlib.abc would cost 0.1-0.3 s of import)
    """``import adah.metrics``: the documented path of :mod:`adah.evaluation.metrics` since 0.1,
    the same module object, imported only when asked for."""

    ALIASES = {"adah.metrics": "adah.evaluation.metrics"}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.ALIASES:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(self.ALIASES[spec.name])
        self._spec = module.__spec__  # the import system overwrites __spec__; exec_module restores it
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._spec


if not any(isinstance(f, _ModuleAlias) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _ModuleAlias())
