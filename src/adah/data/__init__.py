"""Datasets: containers, protocol splits and the built-in synthetic scenes."""

from adah.data.base import CrossModalData, Split, random_split

__all__ = ["CrossModalData", "Split", "random_split"]
