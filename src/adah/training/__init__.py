"""Training: the ADAH objective (:mod:`adah.training.losses`: the triplet ranking terms and the
adversarial terms, one function per pair), the trainer that alternates E,D's minimisation with
G's maximisation (:mod:`adah.training.trainer`), checkpoints and resume
(:mod:`adah.training.checkpoint`: files, RNG states, resume checks) and the per-epoch
diagnostics (:mod:`adah.training.diagnostics`).

    from adah.training import train, Trainer, TrainResult
"""

__all__ = ["TrainResult", "Trainer", "train"]


def __getattr__(name: str):
    """The trainer (and the metrics it imports, numba's among them) loads on first use, so that
    ``adah.training.checkpoint`` (loading a model to search with) does not import it."""
    if name in __all__:
        from adah.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'adah.training' has no attribute {name!r}")
