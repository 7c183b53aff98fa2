"""Shared machinery for the classical cross-modal hashing baselines.

Every baseline follows scikit-learn's estimator contract:

* ``__init__`` stores its keyword arguments unchanged (validated in ``fit``);
* ``fit(image_x, text_x, labels)`` returns ``self``; ``image_x`` is ``(n, d_image)``,
  ``text_x`` is ``(n, d_text)``, ``labels`` is ``(n, C)`` multi-hot {0, 1} (ignored, and may
  be ``None``, for unsupervised methods);
* learned attributes end in ``_``;
* ``encode(x, modality)`` returns ``(n, bits)`` int8 codes in {-1, +1}, modality ``"image"``
  or ``"text"``; calling it before ``fit`` raises :class:`NotFittedError`.

Bad input raises ``ValueError`` naming the argument, what was expected and what was found.
"""

from __future__ import annotations

import inspect
from numbers import Integral, Real
from typing import Any

import numpy as np

from adah.errors import AdahError

__all__ = ["CrossModalHashing", "NotFittedError", "MODALITIES", "sign_codes"]

MODALITIES = ("image", "text")


class NotFittedError(AdahError, AttributeError):
    """``encode`` (or another method needing learned state) was called before ``fit``."""


def sign_codes(z: np.ndarray) -> np.ndarray:
    """±1 codes as int8: ``+1`` where ``z >= 0`` (so an exact 0 maps to +1), else ``-1``."""
    return np.where(np.asarray(z) >= 0, 1, -1).astype(np.int8)


# ----------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------


def _dense(x: Any) -> np.ndarray:
    if hasattr(x, "toarray"):  # scipy.sparse
        x = x.toarray()
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def check_features(x: Any, name: str, *, n_features: int | None = None, n_rows: int | None = None) -> np.ndarray:
    """A finite, non-empty 2-D float64 feature matrix ``(n, d)``."""
    arr = _dense(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), found shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real numbers, found dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, found shape {arr.shape}")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(
            f"{name} must have one row per item of image_x: expected {n_rows} rows, found shape {arr.shape}"
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} must have {n_features} features (as seen in fit), found shape {arr.shape}"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, found NaN or inf")
    return arr


def check_labels(labels: Any, name: str, n_rows: int) -> np.ndarray:
    """A ``(n, C)`` multi-hot matrix with values in {0, 1}, returned as float64."""
    arr = _dense(labels)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D multi-hot array (n_samples, n_classes), found shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(
            f"{name} must have one row per item of image_x: expected {n_rows} rows, found shape {arr.shape}"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one class column, found shape {arr.shape}")
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric multi-hot {{0, 1}}, found dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all((arr == 0) | (arr == 1)):
        bad = np.unique(arr[(arr != 0) & (arr != 1)])[:5]
        raise ValueError(f"{name} must be multi-hot with values in {{0, 1}}, found values such as {bad.tolist()}")
    return arr


def check_int(value: Any, name: str, *, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an int, found {value!r}")
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {rng}, found {value!r}")
    return int(value)


def check_float(
    value: Any, name: str, *, low: float = 0.0, high: float | None = None, low_inclusive: bool = True
) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, found {value!r}")
    too_low = value < low if low_inclusive else value <= low
    if too_low or (high is not None and value > high):
        lo = f"{'>=' if low_inclusive else '>'} {low}"
        rng = lo if high is None else f"{lo} and <= {high}"
        raise ValueError(f"{name} must be {rng}, found {value!r}")
    return float(value)


def check_random_state(random_state: Any) -> np.random.Generator:
    """``None``, an int seed or a ``numpy.random.Generator``."""
    if random_state is None or isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state)
    if isinstance(random_state, Integral) and not isinstance(random_state, (bool, np.bool_)) and random_state >= 0:
        return np.random.default_rng(int(random_state))
    raise ValueError(
        f"random_state must be None, a non-negative int or a numpy.random.Generator, found {random_state!r}"
    )


# ----------------------------------------------------------------------------------------
# Numerical helpers
# ----------------------------------------------------------------------------------------


def fit_standardizer(x: np.ndarray, *, scale: bool = True) -> tuple[np.ndarray, float]:
    """Column means and one global scale so the centred rows have mean squared norm 1.

    A single scalar (not per-feature) keeps the features' relative weights, which matters
    for the methods that reconstruct the features (CMFH) or use Euclidean kernels (SePH).
    """
    mean = x.mean(axis=0)
    if not scale:
        return mean, 1.0
    ms = float(np.mean(np.sum((x - mean) ** 2, axis=1)))
    return mean, (np.sqrt(ms) if ms > 0 else 1.0)


def standardize(x: np.ndarray, mean: np.ndarray, scale: float) -> np.ndarray:
    return (x - mean) / scale


def ridge(cov: np.ndarray, reg: float) -> np.ndarray:
    """``cov + reg * (trace(cov) / d) * I``: a ridge relative to the mean variance (scale-free)."""
    d = cov.shape[0]
    level = np.trace(cov) / d
    return cov + (reg * (level if level > 0 else 1.0)) * np.eye(d)


def fix_signs(w: np.ndarray, *others: np.ndarray) -> None:
    """Flip columns in place so each column of ``w`` has its largest-magnitude entry positive.

    Eigenvectors are defined up to sign; this makes results independent of the LAPACK build.
    ``others`` are flipped along with ``w`` (paired projections).
    """
    idx = np.argmax(np.abs(w), axis=0)
    flip = np.sign(w[idx, np.arange(w.shape[1])])
    flip[flip == 0] = 1.0
    w *= flip
    for o in others:
        o *= flip


# ----------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------


class CrossModalHashing:
    """Base class: parameter handling, input validation, the fit/encode contract.

    Subclasses implement ``_check_params()`` (validate ``__init__`` arguments, raising
    ``ValueError``), ``_fit(image_x, text_x, labels, rng)`` on validated float64 arrays and
    ``_project(x, modality)`` returning real-valued ``(n, bits)`` scores whose sign is the code.
    """

    #: whether ``fit`` needs labels (unsupervised methods accept ``labels=None``)
    _requires_labels: bool = True

    bits: int
    random_state: Any

    # -- scikit-learn style parameters -------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The ``__init__`` arguments as stored (scikit-learn's ``get_params``)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> CrossModalHashing:
        """Set ``__init__`` arguments; unknown names raise ``ValueError``. Returns ``self``."""
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}; expected one of {valid}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- contract ------------------------------------------------------------------------

    def fit(self, image_x: Any, text_x: Any, labels: Any = None) -> CrossModalHashing:
        """Learn hash functions from paired features ``(n, d_image)``, ``(n, d_text)`` and labels ``(n, C)``."""
        check_int(self.bits, "bits")
        image = check_features(image_x, "image_x")
        text = check_features(text_x, "text_x", n_rows=image.shape[0])
        if labels is None:
            if self._requires_labels:
                raise ValueError(f"labels are required by {type(self).__name__} (supervised), found None")
            lab = None
        else:
            lab = check_labels(labels, "labels", image.shape[0])
        if image.shape[0] < 2:
            raise ValueError(f"image_x must have at least 2 rows to fit, found shape {image.shape}")
        rng = check_random_state(self.random_state)
        self._check_params(image, text, lab)
        self._fit(image, text, lab, rng)
        self.n_features_image_ = image.shape[1]
        self.n_features_text_ = text.shape[1]
        self.n_samples_fit_ = image.shape[0]
        return self

    def encode(self, x: Any, modality: str) -> np.ndarray:
        """Hash codes ``(n, bits)`` int8 in {-1, +1} of features ``x`` of ``modality`` ("image"/"text")."""
        self._check_is_fitted()
        modality = self._check_modality(modality)
        feats = check_features(x, "x", n_features=getattr(self, f"n_features_{modality}_"))
        return sign_codes(self._project(feats, modality))

    def encode_image(self, x: Any) -> np.ndarray:
        """``encode(x, "image")``."""
        return self.encode(x, "image")

    def encode_text(self, x: Any) -> np.ndarray:
        """``encode(x, "text")``."""
        return self.encode(x, "text")

    # -- helpers -------------------------------------------------------------------------

    def _check_is_fitted(self) -> None:
        if not hasattr(self, "n_features_image_"):
            raise NotFittedError(
                f"this {type(self).__name__} instance is not fitted yet; call fit(image_x, text_x, labels) "
                f"before encode"
            )

    @staticmethod
    def _check_modality(modality: Any) -> str:
        if not isinstance(modality, str) or modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, found {modality!r}")
        return modality

    def _check_params(self, image: np.ndarray, text: np.ndarray, labels: np.ndarray | None) -> None:
        """Validate the remaining ``__init__`` arguments against the data (subclass hook)."""

    def _fit(self, image: np.ndarray, text: np.ndarray, labels: np.ndarray | None, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _project(self, x: np.ndarray, modality: str) -> np.ndarray:
        raise NotImplementedError


class CenteredLinearHashing(CrossModalHashing):
    """Methods whose codes are sign((x - mean) @ projection) per modality (CCA-ITQ, SCM-seq):
    ``_fit`` calls :meth:`_center` and sets ``image_projection_`` / ``text_projection_``."""

    def _center(self, image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store the feature means ``image_mean_`` / ``text_mean_``; return the centred data."""
        self.image_mean_ = image.mean(axis=0)
        self.text_mean_ = text.mean(axis=0)
        return image - self.image_mean_, text - self.text_mean_

    def _project(self, x: np.ndarray, modality: str) -> np.ndarray:
        if modality == "image":
            return (x - self.image_mean_) @ self.image_projection_
        return (x - self.text_mean_) @ self.text_projection_
