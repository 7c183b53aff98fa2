"""ADAH modules: backbones (E for images), text encoder (E for text), attention G, hashing D."""

from adah.models.adah import ADAH, BranchOutput, build_model
from adah.models.attention import AttentionOutput, FeatureAttention, NoAttention, SpatialAttention, threshold_ste
from adah.models.backbones import ImageBackbone, get_backbone, list_backbones, register_backbone
from adah.models import cnnf  # noqa: F401 - registers the cnn_f backbone
from adah.models.hashing import HashHead, binarize

__all__ = [
    "ADAH", "AttentionOutput", "BranchOutput", "FeatureAttention", "HashHead", "ImageBackbone", "NoAttention",
    "SpatialAttention", "binarize", "build_model", "get_backbone", "list_backbones", "register_backbone",
    "threshold_ste",
]
