"""CCA-ITQ: canonical correlation analysis followed by iterative quantization."""

from __future__ import annotations

import numpy as np
from scipy import linalg

from adah.baselines.base import (
    CenteredLinearHashing,
    check_float,
    check_int,
    fix_signs,
    ridge,
    sign_codes,
)

__all__ = ["CCAITQ", "cca"]


def cca(cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` canonical pairs: ``(wx (dx, k), wy (dy, k), rho (k,))``, rho descending.

    Solves the symmetric generalized problem ``Cxy Cyy^-1 Cyx wx = rho^2 Cxx wx`` with
    ``scipy.linalg.eigh``; ``wy = Cyy^-1 Cyx wx / rho``; normalised ``wx^T Cxx wx =
    wy^T Cyy wy = 1``, so ``wx^T Cxy wy = rho``. ``Cxx``, ``Cyy`` must be positive definite and
    ``k <= min(dx, dy)``. Signs are fixed so each ``wx`` has its largest entry positive.
    """
    cyy_f = linalg.cho_factor(cyy)
    m = cxy @ linalg.cho_solve(cyy_f, cxy.T)  # Cxy Cyy^-1 Cyx, symmetric PSD
    d = m.shape[0]
    evals, wx = linalg.eigh(0.5 * (m + m.T), cxx, subset_by_index=[d - k, d - 1])
    order = np.argsort(evals)[::-1]
    evals, wx = evals[order], wx[:, order]
    rho = np.sqrt(np.clip(evals, 0.0, None))
    wy = linalg.cho_solve(cyy_f, cxy.T @ wx)
    # normalise wy^T Cyy wy = 1 (equals wy / rho when rho > 0; safe when rho == 0)
    norms = np.sqrt(np.clip(np.einsum("ij,ij->j", wy, cyy @ wy), 0.0, None))
    wy = wy / np.where(norms > 0, norms, 1.0)
    fix_signs(wx, wy)
    return wx, wy, rho


class CCAITQ(CenteredLinearHashing):
    """CCA-ITQ for cross-modal hashing (unsupervised; ``labels`` are ignored).

    Reference: Y. Gong, S. Lazebnik, A. Gordo, F. Perronnin, "Iterative Quantization: A
    Procrustean Approach to Learning Binary Codes for Large-Scale Image Retrieval",
    IEEE TPAMI 35(12), 2013 (CCA-ITQ, Sec. 4), used cross-modally as in the cross-modal hashing
    literature: CCA between the image and the text features, one shared ITQ rotation.

    Steps:

    1. centre each modality; covariances ``Cxx, Cyy, Cxy`` (divided by n) with a ridge
       ``reg * trace(C) / d`` on the diagonal of ``Cxx`` and ``Cyy``;
    2. solve ``Cxy Cyy^-1 Cyx wx = rho^2 Cxx wx`` with ``scipy.linalg.eigh`` (generalized,
       symmetric) and keep the ``bits`` largest; ``wy = Cyy^-1 Cyx wx / rho``;
    3. scale each canonical direction by ``rho_k ** eigenvalue_power`` (Gong et al. weight the
       CCA directions by their eigenvalues; ``eigenvalue_power=0`` gives plain CCA);
    4. ITQ on both modalities' projections stacked, ``V = [X Wx; Y Wy]`` ``(2n, bits)``:
       from a random orthogonal ``R``, alternate ``B = sign(V R)`` and the Procrustes solution
       ``R = U W^T`` where ``V^T B = U S W^T``, for ``n_iter`` iterations.

    Codes: ``sign((x - mean) W_m R)`` for modality ``m``.

    Simplifications: the original CCA-ITQ uses labels as the second CCA view (supervised,
    single-modal); here the second view is the other modality and labels are unused.

    Parameters
    ----------
    bits : code length; at most ``min(d_image, d_text)`` (the rank of the cross-covariance).
    reg : relative ridge added to the covariances (> 0).
    eigenvalue_power : exponent of the canonical correlations used to weight the directions.
    n_iter : ITQ iterations.
    random_state : seed (or ``numpy.random.Generator``) of the initial rotation.

    Attributes
    ----------
    image_mean_, text_mean_ : feature means; ``image_projection_ (d_image, bits)``,
    ``text_projection_ (d_text, bits)``: CCA directions times the rotation; ``rotation_``;
    ``correlations_ (bits,)``: canonical correlations, descending; ``quantization_history_``:
    ``||B - V R||_F^2`` after each ITQ iteration (non-increasing).
    """

    _requires_labels = False

    def __init__(
        self,
        bits: int = 32,
        *,
        reg: float = 1e-3,
        eigenvalue_power: float = 1.0,
        n_iter: int = 50,
        random_state=0,
    ):
        self.bits = bits
        self.reg = reg
        self.eigenvalue_power = eigenvalue_power
        self.n_iter = n_iter
        self.random_state = random_state

    def _check_params(self, image, text, labels):
        limit = min(image.shape[1], text.shape[1])
        if self.bits > limit:
            raise ValueError(
                f"bits must be <= min(d_image, d_text) = {limit} for CCA-ITQ (the rank of the "
                f"cross-covariance), found {self.bits}"
            )
        check_float(self.reg, "reg", low=0.0, low_inclusive=False)
        check_float(self.eigenvalue_power, "eigenvalue_power", low=0.0)
        check_int(self.n_iter, "n_iter", low=0)

    def _fit(self, image, text, labels, rng):
        bits = int(self.bits)
        n = image.shape[0]
        x, y = self._center(image, text)
        cxx = ridge(x.T @ x / n, self.reg)
        cyy = ridge(y.T @ y / n, self.reg)
        cxy = x.T @ y / n

        wx, wy, rho = cca(cxx, cyy, cxy, bits)
        weight = rho**self.eigenvalue_power
        wx = wx * weight
        wy = wy * weight

        v = np.vstack([x @ wx, y @ wy])
        r = np.linalg.qr(rng.standard_normal((bits, bits)))[0]
        history = []
        for _ in range(int(self.n_iter)):
            b = sign_codes(v @ r).astype(np.float64)
            u, _, wt = np.linalg.svd(v.T @ b)
            r = u @ wt
            history.append(float(np.sum((sign_codes(v @ r) - v @ r) ** 2)))

        self.correlations_ = rho
        self.rotation_ = r
        self.image_projection_ = wx @ r
        self.text_projection_ = wy @ r
        self.quantization_history_ = np.asarray(history)
