"""CMFH: collective matrix factorization hashing."""

from __future__ import annotations

import numpy as np
from scipy import linalg

from adah.baselines.base import (
    CrossModalHashing,
    check_float,
    check_int,
    fit_standardizer,
    standardize,
)

__all__ = ["CMFH"]


def _solve_right(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``a @ inv(m)`` for a symmetric positive definite ``m``."""
    return linalg.solve(m, a.T, assume_a="pos").T


class CMFH(CrossModalHashing):
    """Collective Matrix Factorization Hashing (unsupervised; ``labels`` are ignored).

    Reference: G. Ding, Y. Guo, J. Zhou, "Collective Matrix Factorization Hashing for
    Multimodal Data", CVPR 2014.

    With ``X1 (d_image, n)``, ``X2 (d_text, n)`` (columns are items) and a shared latent
    ``V (bits, n)``, minimise

        lam ||X1 - U1 V||^2 + (1 - lam) ||X2 - U2 V||^2
        + mu (||V - P1 X1||^2 + ||V - P2 X2||^2)
        + gamma (||U1||^2 + ||U2||^2 + ||V||^2) + mu r1 ||P1||^2 + mu r2 ||P2||^2

    by alternating exact block updates (each a ridge solve, so the objective never increases):

        U1 = X1 V^T (V V^T + gamma/lam I)^-1          U2 likewise with (1 - lam)
        P1 = V X1^T (X1 X1^T + r1 I)^-1               P2 likewise with r2
        V  = (lam U1^T U1 + (1-lam) U2^T U2 + (2 mu + gamma) I)^-1
             (lam U1^T X1 + (1-lam) U2^T X2 + mu (P1 X1 + P2 X2))

    ``V`` starts random (``random_state``); iteration stops after ``max_iter`` updates or when the
    relative decrease of the objective falls below ``tol``. Codes: ``sign(P_m x~ - t_m)`` where
    ``x~`` is the standardised feature and ``t_m`` the mean of ``P_m x~`` over the training set.

    Simplifications: features are centred and divided by one scalar per modality (so rows have
    mean squared norm 1) before factorising, which makes ``lam``, ``mu``, ``gamma`` comparable
    across datasets; the regulariser R is the plain squared Frobenius norm of every block, except
    that the hash functions' ridge is relative to the features' mean variance:
    ``r_m = ridge * trace(X_m X_m^T) / d_m``. With an absolute ridge (the paper's gamma / mu) a
    modality with more dimensions than training items (a 3,000-word bag of words, 1,280 averaged
    MobileNetV2 channels) lets ``P_m X_m = V`` hold exactly for any V: V then stays at its random
    start, the hash functions fit noise, and the codes of new items rank at chance (MAP 0.12 on
    2,193 real photos). ``ridge`` keeps P from interpolating, whatever the dimension.

    Parameters
    ----------
    bits : code length.
    lam : weight of the image reconstruction, in (0, 1); the text gets ``1 - lam``.
    mu : weight of the linear hash functions' fit to V (> 0).
    gamma : Frobenius regularisation of U1, U2 and V (> 0).
    ridge : the hash functions' ridge, relative to the features' mean variance (> 0).
    max_iter, tol : stopping rule.
    random_state : seed (or ``numpy.random.Generator``) of the initial ``V``.

    Attributes
    ----------
    image_mean_, image_scale_, text_mean_, text_scale_ : standardisation;
    ``image_projection_ (bits, d_image)`` = P1, ``text_projection_`` = P2; ``image_basis_`` = U1,
    ``text_basis_`` = U2; ``latent_ (bits, n)`` = V; ``thresholds_`` dict of ``(bits,)`` per
    modality; ``projection_ridge_`` dict ``{"image": r1, "text": r2}``; ``objective_history_``:
    objective after each iteration; ``n_iter_``.
    """

    _requires_labels = False

    def __init__(
        self,
        bits: int = 32,
        *,
        lam: float = 0.5,
        mu: float = 100.0,
        gamma: float = 0.01,
        ridge: float = 0.1,
        max_iter: int = 100,
        tol: float = 1e-6,
        random_state=0,
    ):
        self.bits = bits
        self.lam = lam
        self.mu = mu
        self.gamma = gamma
        self.ridge = ridge
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _check_params(self, image, text, labels):
        check_float(self.lam, "lam", low=0.0, high=1.0, low_inclusive=False)
        if self.lam >= 1.0:
            raise ValueError(f"lam must be < 1 (the text weight is 1 - lam), found {self.lam!r}")
        check_float(self.mu, "mu", low=0.0, low_inclusive=False)
        check_float(self.gamma, "gamma", low=0.0, low_inclusive=False)
        check_float(self.ridge, "ridge", low=0.0, low_inclusive=False)
        check_int(self.max_iter, "max_iter")
        check_float(self.tol, "tol", low=0.0)

    def _objective(self, x1, x2, u1, u2, p1, p2, v) -> float:
        """The CMFH objective for standardised ``x1 (d_image, n)``, ``x2 (d_text, n)`` and the blocks."""
        lam, mu, gamma = self.lam, self.mu, self.gamma
        r1, r2 = self.projection_ridge_["image"], self.projection_ridge_["text"]
        sq = lambda a: float(np.sum(a * a))  # noqa: E731
        return (
            lam * sq(x1 - u1 @ v)
            + (1 - lam) * sq(x2 - u2 @ v)
            + mu * (sq(v - p1 @ x1) + sq(v - p2 @ x2))
            + gamma * (sq(u1) + sq(u2) + sq(v))
            + mu * (r1 * sq(p1) + r2 * sq(p2))
        )

    def _fit(self, image, text, labels, rng):
        bits = int(self.bits)
        lam, mu, gamma = float(self.lam), float(self.mu), float(self.gamma)
        self.image_mean_, self.image_scale_ = fit_standardizer(image)
        self.text_mean_, self.text_scale_ = fit_standardizer(text)
        x1 = standardize(image, self.image_mean_, self.image_scale_).T
        x2 = standardize(text, self.text_mean_, self.text_scale_).T
        eye = np.eye(bits)
        # the P updates only depend on V through V X^T: factor the Gram matrices once; their ridge
        # is relative to the mean variance, so P cannot interpolate V when d > n (see the docstring)
        c1, c2 = x1 @ x1.T, x2 @ x2.T
        r1, r2 = (float(self.ridge) * (np.trace(c) / len(c) or 1.0) for c in (c1, c2))
        self.projection_ridge_ = {"image": r1, "text": r2}
        g1_f = linalg.cho_factor(c1 + r1 * np.eye(len(c1)))
        g2_f = linalg.cho_factor(c2 + r2 * np.eye(len(c2)))

        v = rng.standard_normal((bits, x1.shape[1]))
        history: list[float] = []
        for _ in range(int(self.max_iter)):
            vvt = v @ v.T
            u1 = _solve_right(x1 @ v.T, vvt + (gamma / lam) * eye)
            u2 = _solve_right(x2 @ v.T, vvt + (gamma / (1 - lam)) * eye)
            p1 = linalg.cho_solve(g1_f, x1 @ v.T).T
            p2 = linalg.cho_solve(g2_f, x2 @ v.T).T
            lhs = lam * u1.T @ u1 + (1 - lam) * u2.T @ u2 + (2 * mu + gamma) * eye
            rhs = lam * u1.T @ x1 + (1 - lam) * u2.T @ x2 + mu * (p1 @ x1 + p2 @ x2)
            v = linalg.solve(lhs, rhs, assume_a="pos")
            history.append(self._objective(x1, x2, u1, u2, p1, p2, v))
            if len(history) > 1 and history[-2] - history[-1] <= self.tol * abs(history[-2]):
                break

        self.image_basis_, self.text_basis_ = u1, u2
        self.image_projection_, self.text_projection_ = p1, p2
        self.latent_ = v
        self.objective_history_ = np.asarray(history)
        self.n_iter_ = len(history)
        self.thresholds_ = {"image": (p1 @ x1).mean(axis=1), "text": (p2 @ x2).mean(axis=1)}

    def _project(self, x, modality):
        if modality == "image":
            z = standardize(x, self.image_mean_, self.image_scale_) @ self.image_projection_.T
        else:
            z = standardize(x, self.text_mean_, self.text_scale_) @ self.text_projection_.T
        return z - self.thresholds_[modality]
