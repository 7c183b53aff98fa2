"""SCM-seq: supervised multimodal hashing with semantic correlation maximization (sequential)."""

from __future__ import annotations

import numpy as np

from adah.baselines.base import CenteredLinearHashing, check_float, ridge, sign_codes
from adah.baselines.cca_itq import cca

__all__ = ["SCMSeq", "label_similarity_factors"]


def label_similarity_factors(labels: np.ndarray) -> np.ndarray:
    """Row-normalised labels ``L~`` with ``S = 2 L~ L~^T - 1 1^T`` (cosine similarity mapped to [-1, 1]).

    ``S_ij = 2 l_i^T l_j / (||l_i|| ||l_j||) - 1``; an item without labels gets a zero row
    (similarity -1 to everything).
    """
    norms = np.linalg.norm(labels, axis=1, keepdims=True)
    return labels / np.where(norms > 0, norms, 1.0)


class SCMSeq(CenteredLinearHashing):
    """SCM-seq: semantic correlation maximization, sequential variant (supervised).

    Reference: D. Zhang, W.-J. Li, "Large-Scale Supervised Multimodal Hashing with Semantic
    Correlation Maximization", AAAI 2014.

    The semantic similarity is ``S = 2 L~ L~^T - 1 1^T`` with ``L~`` the row-normalised labels,
    i.e. ``S_ij = 2 cos(l_i, l_j) - 1``. SCM wants ``sign(X Wx) sign(Y Wy)^T`` to reconstruct
    ``bits * S`` (features centred; covariances divided by n). The sequential variant learns
    one bit at a time on the residue ``R_t = bits * S - sum_{k<t} b_x^k (b_y^k)^T`` of the
    bits already learnt (``b_x^k = sign(X wx_k)``, ``b_y^k = sign(Y wy_k)``); relaxing the
    sign, bit ``t`` maximises ``wx^T C_t wy`` under ``wx^T Cxx wx = wy^T Cyy wy = 1``, the top
    pair of the generalized eigenproblem

        [0, C_t; C_t^T, 0] w = lambda [Cxx, 0; 0, Cyy] w,    C_t = X^T R_t Y / n^2,

    solved as ``C_t Cyy^-1 C_t^T wx = lambda^2 Cxx wx`` with ``scipy.linalg.eigh``, and
    ``wy = Cyy^-1 C_t^T wx / lambda``. The n x n matrix S is never formed:
    ``C_1 = bits * (2 (X^T L~)(L~^T Y) - (X^T 1)(1^T Y)) / n^2`` and
    ``C_{t+1} = C_t - (X^T b_x^t)(Y^T b_y^t)^T / n^2``. As in the authors' code, when
    ``lambda_t`` stops decreasing the remaining bits are the top CCA directions instead.
    Codes: ``sign((x - mean) W_m)``.

    Simplifications: ``Cxx = X^T X / n + reg * trace(X^T X / n) / d * I`` (and likewise
    ``Cyy``): a relative ridge instead of the authors' absolute 1e-6 (the paper's constraint
    ``Wx^T X^T X Wx = n I`` is the same up to that ridge). ``random_state`` is accepted for a
    uniform interface but unused: the algorithm is deterministic (eigenvector signs are
    fixed so the largest entry of each ``wx`` is positive).

    Parameters
    ----------
    bits : code length.
    reg : relative ridge (> 0).
    random_state : unused.

    Attributes
    ----------
    image_mean_, text_mean_; ``image_projection_ (d_image, bits)``, ``text_projection_
    (d_text, bits)``; ``eigenvalues_ (n_scm_bits_,)``: ``lambda_t`` of each sequentially
    learnt bit, equal to its relaxed objective ``wx_t^T C_t wy_t = (X wx_t)^T R_t (Y wy_t) / n^2``;
    ``n_scm_bits_``: bits learnt sequentially (the rest, if any, come from CCA).
    """

    def __init__(self, bits: int = 32, *, reg: float = 1e-3, random_state=0):
        self.bits = bits
        self.reg = reg
        self.random_state = random_state

    def _check_params(self, image, text, labels):
        check_float(self.reg, "reg", low=0.0, low_inclusive=False)

    def _fit(self, image, text, labels, rng):
        bits = int(self.bits)
        n = image.shape[0]
        x, y = self._center(image, text)
        sx = x.T @ x / n
        sy = y.T @ y / n
        cxx = ridge(sx, self.reg)
        cyy = ridge(sy, self.reg)
        sxy = x.T @ y / n
        lt = label_similarity_factors(labels)
        c = bits * (2.0 * (x.T @ lt) @ (lt.T @ y) - np.outer(x.sum(axis=0), y.sum(axis=0))) / n**2

        wxs, wys, lams = [], [], []
        for _ in range(bits):
            wx, wy, lam = cca(cxx, cyy, c, 1)  # top pair of [0, C; C^T, 0] w = lam [Cxx, 0; 0, Cyy] w
            if lam[0] <= 1e-12 or (lams and lam[0] > lams[-1]):
                # no label signal left, or the residue no longer shrinks: the remaining bits
                # come from CCA (as in the authors' code)
                break
            lams.append(float(lam[0]))
            wxs.append(wx[:, 0])
            wys.append(wy[:, 0])
            bx, by = sign_codes(x @ wx[:, 0]), sign_codes(y @ wy[:, 0])
            c = c - np.outer(x.T @ bx, y.T @ by) / n**2
        self.n_scm_bits_ = len(lams)
        wx = np.stack(wxs, axis=1) if wxs else np.zeros((x.shape[1], 0))
        wy = np.stack(wys, axis=1) if wys else np.zeros((y.shape[1], 0))
        if len(lams) < bits:
            k = bits - len(lams)
            if k > min(x.shape[1], y.shape[1]):
                raise ValueError(
                    f"bits={bits}: SCM-seq stopped improving after {len(lams)} bits and the CCA fallback "
                    f"can supply at most min(d_image, d_text) = {min(x.shape[1], y.shape[1])} more"
                )
            cx, cy, _ = cca(cxx, cyy, sxy, k)
            wx, wy = np.hstack([wx, cx]), np.hstack([wy, cy])
        self.image_projection_ = wx
        self.text_projection_ = wy
        self.eigenvalues_ = np.asarray(lams)
