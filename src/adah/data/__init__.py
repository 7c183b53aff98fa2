"""Datasets: containers, protocol splits, the built-in synthetic scenes and readers for real data
(DCMH-format MIRFlickr-25K / NUS-WIDE / IAPR TC-12, Wikipedia, and a plain folder format)."""

from adah.data.base import CrossModalData, Split, random_split
from adah.data.lazy import H5Images, LazyImages
from adah.data.registry import DATASETS, PROTOCOLS, load_dataset, make_split, resolve_data_root
from adah.data.vocab import Vocabulary, build_vocabulary, tokenize

__all__ = [
    "CrossModalData", "DATASETS", "H5Images", "LazyImages", "PROTOCOLS", "Split", "Vocabulary",
    "build_vocabulary", "load_dataset", "make_split", "random_split", "resolve_data_root", "tokenize",
]
