"""Training: the ADAH objective (:mod:`adah.training.losses`: the triplet ranking terms and the
adversarial terms, one function per pair) and the trainer that alternates E,D's minimisation with
G's maximisation (:mod:`adah.training.trainer`: resume, checkpoints, per-epoch diagnostics).

    from adah.training import train, Trainer, TrainResult
"""

from adah.training.trainer import TrainResult, Trainer, train

__all__ = ["TrainResult", "Trainer", "train"]
