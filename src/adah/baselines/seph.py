"""SePH: semantics-preserving hashing for cross-view retrieval (the k-means landmark variant)."""

from __future__ import annotations

import numpy as np
from scipy import optimize

from adah.baselines.base import CrossModalHashing, check_float, check_int, sign_codes
from adah.baselines.scm import label_similarity_factors

__all__ = ["SePH", "kmeans"]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 20) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns ``(k, d)`` centres (an empty cluster keeps its centre)."""
    n = x.shape[0]
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    closest = _sq_dists(x, centres[:1])[:, 0]
    for j in range(1, k):
        total = closest.sum()
        idx = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centres[j] = x[idx]
        closest = np.minimum(closest, _sq_dists(x, centres[j : j + 1])[:, 0])
    assign = None
    for _ in range(n_iter):
        new = np.argmin(_sq_dists(x, centres), axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


class _Affinity:
    """A fixed affinity distribution ``P`` with what the KL objective needs precomputed."""

    def __init__(self, p: np.ndarray):
        self.p = p
        self.flat_index = np.flatnonzero(p)
        self.values = p.ravel()[self.flat_index]
        self.p_log_p = float(self.values @ np.log(self.values))


class SePH(CrossModalHashing):
    """Semantics-Preserving Hashing, SePH_km (supervised).

    Reference: Z. Lin, G. Ding, M. Hu, J. Wang, "Semantics-Preserving Hashing for Cross-View
    Retrieval", CVPR 2015.

    1. Codes. On ``n_train`` randomly sampled training items, the label affinity
       ``A_ij = cos(l_i, l_j)`` (diagonal zeroed) is normalised into a distribution
       ``P = A / sum(A)``. Real-valued codes ``H (n_train, bits)`` define
       ``Q_ij ∝ 1 / (1 + ||h_i - h_j||^2 / 4)`` (the relaxed Hamming distance, exact for ±1
       codes). SePH minimises ``KL(P || Q) + alpha * || |H| - 1 ||_F^2``; the learnt codes are
       ``sign(H)``.
    2. Hash functions. For each modality, RBF features ``phi(x)_k = exp(-||x - m_k||^2 / (2 s))``
       on ``n_landmarks`` k-means centres ``m_k`` (``s`` the mean squared distance of the
       training items to the centres), then for each bit an L2-regularised logistic
       regression from ``phi(x)`` (plus bias) to that bit of ``sign(H)``. Codes:
       ``sign(phi(x) W_m + b_m)``.

    Simplifications (plainly):

    * the objective is minimised with L-BFGS (``scipy.optimize.minimize``) instead of the
      authors' t-SNE-style gradient descent with momentum and gains, in two stages of up to
      ``max_iter`` iterations each: first ``KL(P || Q)`` alone from a small random ``H``
      (``kl_history_``), then the full objective from there (``objective_history_``). Started
      directly from a small ``H``, the quantization term locks every entry's sign at its random
      initial value within a few iterations (its gradient is O(alpha) per entry, the KL's
      O(1/n)); the first stage lets the KL term place the codes first. L-BFGS's line search
      makes both histories non-increasing;
    * landmarks and the logistic regressions use the same ``n_train`` sample as the codes
      (the paper samples separately for training the hash functions);
    * the logistic regressions of all bits are solved jointly by L-BFGS (they are independent);
    * each query is encoded from its own modality only; the paper's probabilistic fusion of
      both views into one code for items that have both is not implemented.

    Parameters
    ----------
    bits : code length.
    alpha : weight of the quantization term ``|| |H| - 1 ||^2``.
    n_train : size of the sample used to learn the codes (memory ``O(n_train^2)``).
    n_landmarks : k-means landmarks per modality (capped at the sample size).
    klr_reg : L2 weight of the logistic regressions (on the mean log-loss).
    max_iter : L-BFGS iterations for the codes; ``klr_max_iter`` for the regressions.
    random_state : seed (or ``numpy.random.Generator``): sample, code initialisation, k-means.

    Attributes
    ----------
    train_indices_ : rows of the fit data used; ``codes_ (n_train, bits)`` int8: learnt codes;
    ``kl_history_``: KL at the start and after each iteration of stage 1;
    ``objective_history_``: KL + quantization at the start and after each iteration of stage 2;
    ``final_kl_``: KL of the final real-valued codes; ``image_landmarks_``, ``text_landmarks_``,
    ``image_kernel_scale_``,
    ``text_kernel_scale_``; ``image_weights_ (n_landmarks + 1, bits)``, ``text_weights_``
    (last row: bias).
    """

    def __init__(
        self,
        bits: int = 32,
        *,
        alpha: float = 0.01,
        n_train: int = 2000,
        n_landmarks: int = 500,
        klr_reg: float = 1e-4,
        max_iter: int = 300,
        klr_max_iter: int = 300,
        random_state=0,
    ):
        self.bits = bits
        self.alpha = alpha
        self.n_train = n_train
        self.n_landmarks = n_landmarks
        self.klr_reg = klr_reg
        self.max_iter = max_iter
        self.klr_max_iter = klr_max_iter
        self.random_state = random_state

    def _check_params(self, image, text, labels):
        check_float(self.alpha, "alpha", low=0.0)
        check_int(self.n_train, "n_train", low=2)
        check_int(self.n_landmarks, "n_landmarks")
        check_float(self.klr_reg, "klr_reg", low=0.0, low_inclusive=False)
        check_int(self.max_iter, "max_iter")
        check_int(self.klr_max_iter, "klr_max_iter")

    # -- step 1: codes by KL minimisation -----------------------------------------------

    @staticmethod
    def affinity(labels: np.ndarray) -> np.ndarray:
        """``P``: cosine label affinities with a zero diagonal, normalised to sum to 1."""
        lt = label_similarity_factors(labels)
        a = lt @ lt.T
        np.fill_diagonal(a, 0.0)
        total = a.sum()
        if total <= 0:
            raise ValueError("labels: no two training items share a label, so SePH's affinity P is undefined")
        return a / total

    @staticmethod
    def kl_objective(h: np.ndarray, p: np.ndarray | _Affinity, alpha: float = 0.0) -> tuple[float, float, np.ndarray]:
        """``(KL(P || Q) + alpha || |H| - 1 ||^2, KL(P || Q), gradient)`` for real codes ``h (n, bits)``.

        The gradient is ``sum_j (P_ij - Q_ij) w_ij (h_i - h_j) + 2 alpha (|h| - 1) sign(h)`` with
        ``w_ij = 1 / (1 + ||h_i - h_j||^2 / 4)`` and ``Q_ij = w_ij / sum_{k != l} w_kl``.
        """
        aff = p if isinstance(p, _Affinity) else _Affinity(p)
        sq = np.sum(h * h, axis=1)
        dist = h @ h.T
        dist *= -2.0
        dist += sq[:, None]
        dist += sq[None, :]
        np.maximum(dist, 0.0, out=dist)
        dist *= 0.25
        # KL = sum P log P - sum P log Q, with log Q = -log(1 + d) - log z, sum P = 1, P_ii = 0;
        # the logarithm is only needed where P > 0
        kl = aff.p_log_p + float(aff.values @ np.log1p(dist.ravel()[aff.flat_index]))
        w = np.reciprocal(1.0 + dist, out=dist)
        np.fill_diagonal(w, 0.0)
        z = float(w.sum())
        kl += np.log(z)
        lmat = aff.p - w / z
        lmat *= w
        grad = lmat.sum(axis=1)[:, None] * h - lmat @ h
        dev = np.abs(h) - 1.0
        total = kl + alpha * float(np.sum(dev * dev))
        grad += 2.0 * alpha * dev * np.sign(h)
        return total, kl, grad

    def _minimize(self, h0: np.ndarray, p: _Affinity, alpha: float) -> tuple[np.ndarray, list, list]:
        """L-BFGS on ``kl_objective``; returns the solution and (total, KL) at the start and each iterate."""
        n, bits = h0.shape
        last: dict[str, object] = {}

        def fun(flat):
            total, kl, grad = self.kl_objective(flat.reshape(n, bits), p, alpha)
            last.update(x=flat.copy(), total=total, kl=kl)
            return total, grad.ravel()

        totals: list[float] = []
        kls: list[float] = []

        def record(flat):
            if "x" not in last or not np.array_equal(last["x"], flat):
                fun(flat)
            totals.append(float(last["total"]))
            kls.append(float(last["kl"]))

        record(h0.ravel())
        res = optimize.minimize(
            fun,
            h0.ravel(),
            jac=True,
            method="L-BFGS-B",
            callback=lambda intermediate_result: record(intermediate_result.x),
            options={"maxiter": int(self.max_iter), "ftol": 1e-10, "gtol": 1e-12},
        )
        return res.x.reshape(n, bits), totals, kls

    def _learn_codes(self, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        aff = _Affinity(p)
        h0 = 1e-2 * rng.standard_normal((p.shape[0], int(self.bits)))
        h1, _, kl1 = self._minimize(h0, aff, 0.0)
        h2, total2, kl2 = self._minimize(h1, aff, float(self.alpha))
        self.kl_history_ = np.asarray(kl1)
        self.objective_history_ = np.asarray(total2)
        self.final_kl_ = kl2[-1]
        return h2

    # -- step 2: kernel logistic regression ---------------------------------------------

    def _features(self, x: np.ndarray, landmarks: np.ndarray, scale: float) -> np.ndarray:
        phi = np.exp(-_sq_dists(x, landmarks) / (2.0 * scale))
        return np.hstack([phi, np.ones((x.shape[0], 1))])

    def _fit_klr(self, phi: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Independent L2 logistic regressions, one per column of ±1 ``targets``, solved jointly."""
        n, k = phi.shape
        bits = targets.shape[1]
        reg = float(self.klr_reg)
        mask = np.ones((k, 1))
        mask[-1] = 0.0  # no penalty on the bias

        def fun(flat):
            w = flat.reshape(k, bits)
            m = targets * (phi @ w)
            loss = np.logaddexp(0.0, -m).sum() / n + 0.5 * reg * np.sum(mask * w * w)
            g = -targets * np.exp(-np.logaddexp(0.0, m))  # d/dz log(1 + e^{-y z}) = -y sigmoid(-y z)
            grad = phi.T @ g / n + reg * mask * w
            return loss, grad.ravel()

        res = optimize.minimize(
            fun, np.zeros(k * bits), jac=True, method="L-BFGS-B", options={"maxiter": int(self.klr_max_iter)}
        )
        return res.x.reshape(k, bits)

    def _fit(self, image, text, labels, rng):
        n = image.shape[0]
        m = min(int(self.n_train), n)
        idx = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        p = self.affinity(labels[idx])
        h = self._learn_codes(p, rng)
        codes = sign_codes(h)
        self.train_indices_ = idx
        self.codes_ = codes
        k = min(int(self.n_landmarks), m)
        targets = codes.astype(np.float64)
        for name, x in (("image", image[idx]), ("text", text[idx])):
            landmarks = kmeans(x, k, rng)
            scale = float(np.mean(_sq_dists(x, landmarks)))
            scale = scale if scale > 0 else 1.0
            w = self._fit_klr(self._features(x, landmarks, scale), targets)
            setattr(self, f"{name}_landmarks_", landmarks)
            setattr(self, f"{name}_kernel_scale_", scale)
            setattr(self, f"{name}_weights_", w)

    def _project(self, x, modality):
        phi = self._features(x, getattr(self, f"{modality}_landmarks_"), getattr(self, f"{modality}_kernel_scale_"))
        return phi @ getattr(self, f"{modality}_weights_")
