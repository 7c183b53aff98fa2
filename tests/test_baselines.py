"""Tests for the classical cross-modal hashing baselines (adah.baselines).

A small synthetic cross-modal set (600 items, 6 classes, some items with two labels; image
features a class-dependent Gaussian mixture in 40-d, text another class-dependent map in
30-d, both with noise): each method is fitted on 400 items and 200 queries are ranked
against the 400 in both directions (I->T, T->I) with adah.evaluation.metrics.mean_average_precision.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg, optimize

from adah.baselines import BASELINES, CCAITQ, CMFH, SCMSeq, SePH, NotFittedError, sign_codes
from adah.baselines.base import ridge
from adah.evaluation.metrics import mean_average_precision

N_TRAIN, N_QUERY, N_CLASSES, BITS = 400, 200, 6, 16
WIKI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wiki" / "wiki_roph.mat"

# small settings so the whole file runs in seconds
FACTORIES = {
    "cca_itq": lambda bits=BITS, **kw: CCAITQ(bits, **kw),
    "scm_seq": lambda bits=BITS, **kw: SCMSeq(bits, **kw),
    "cmfh": lambda bits=BITS, **kw: CMFH(bits, max_iter=60, **kw),
    "seph": lambda bits=BITS, **kw: SePH(bits, n_landmarks=60, max_iter=150, klr_max_iter=150, **kw),
}
NAMES = list(FACTORIES)
RANDOMISED = ["cca_itq", "cmfh", "seph"]  # SCM-seq is deterministic


# --------------------------------------------------------------------------------------
# BLAS threads: on a small shared machine, multi-threaded OpenBLAS spends most of its time
# spinning on the tiny matrices here (10x slower in L-BFGS loops). Pin it to one thread
# for this module when the library exposes the setter; otherwise do nothing.
# --------------------------------------------------------------------------------------


def _openblas_handles():
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and line.strip().endswith(".so")}
    except OSError:
        return []
    handles = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for getter, setter in [
            ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
            ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
            ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
            ("openblas_get_num_threads", "openblas_set_num_threads"),
        ]:
            if hasattr(lib, getter) and hasattr(lib, setter):
                handles.append((getattr(lib, getter), getattr(lib, setter)))
                break
    return handles


@pytest.fixture(scope="module", autouse=True)
def single_blas_thread():
    handles = _openblas_handles()
    before = [get() for get, _ in handles]
    for _, set_ in handles:
        set_(1)
    yield
    for (_, set_), n in zip(handles, before):
        set_(n)


# --------------------------------------------------------------------------------------
# Data and fitted models
# --------------------------------------------------------------------------------------


def make_cross_modal(n: int = N_TRAIN + N_QUERY, classes: int = N_CLASSES, seed: int = 0):
    """Paired features and multi-hot labels: one label per item, 30% get a second one."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, classes))
    labels[np.arange(n), rng.integers(classes, size=n)] = 1
    extra = np.flatnonzero(rng.random(n) < 0.3)
    labels[extra, rng.integers(classes, size=extra.size)] = 1
    image_means = rng.normal(size=(classes, 40))
    text_map = rng.normal(size=(classes, 30))
    image = labels @ image_means + rng.normal(size=(n, 40))
    text = np.tanh(labels @ text_map) + 0.5 * rng.normal(size=(n, 30)) + 3.0  # offset: tests centring
    return image, text, labels


@pytest.fixture(scope="module")
def data():
    image, text, labels = make_cross_modal()
    tr, q = slice(0, N_TRAIN), slice(N_TRAIN, None)
    return {
        "image": image[tr], "text": text[tr], "labels": labels[tr],
        "q_image": image[q], "q_text": text[q], "q_labels": labels[q],
    }


@pytest.fixture(scope="module")
def fitted(data):
    """Each method fitted once (random_state=0) on the 400 training items."""
    return {name: FACTORIES[name]().fit(data["image"], data["text"], data["labels"]) for name in NAMES}


def random_map(data, seed: int = 0, repeats: int = 5) -> float:
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(repeats):
        q = np.where(rng.random((N_QUERY, BITS)) < 0.5, 1, -1)
        db = np.where(rng.random((N_TRAIN, BITS)) < 0.5, 1, -1)
        scores.append(mean_average_precision(q, db, data["q_labels"], data["labels"]))
    return float(np.mean(scores))


def cross_modal_maps(model, image_q, text_q, image_db, text_db, q_labels, db_labels) -> tuple[float, float]:
    i2t = mean_average_precision(model.encode(image_q, "image"), model.encode(text_db, "text"), q_labels, db_labels)
    t2i = mean_average_precision(model.encode(text_q, "text"), model.encode(image_db, "image"), q_labels, db_labels)
    return i2t, t2i


def label_similarity(labels: np.ndarray) -> np.ndarray:
    """S_ij = 2 cos(l_i, l_j) - 1, built directly (n x n) as a reference."""
    norms = np.linalg.norm(labels, axis=1)
    return 2.0 * (labels @ labels.T) / np.outer(norms, norms) - 1.0


def is_non_increasing(history, rtol: float = 1e-9) -> bool:
    h = np.asarray(history, dtype=np.float64)
    return bool(np.all(np.diff(h) <= rtol * np.abs(h[:-1]) + 1e-12))


# --------------------------------------------------------------------------------------
# Contract shared by all methods
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_codes_shape_dtype_values(name, fitted, data):
    model = fitted[name]
    for modality in ("image", "text"):
        codes = model.encode(data[f"q_{modality}"], modality)
        assert codes.shape == (N_QUERY, BITS)
        assert codes.dtype == np.int8
        assert set(np.unique(codes).tolist()) <= {-1, 1}
        assert len(np.unique(codes)) == 2  # not a constant code
    assert model.n_features_image_ == 40 and model.n_features_text_ == 30


@pytest.mark.parametrize("name", NAMES)
def test_cross_modal_map_well_above_random(name, fitted, data):
    chance = random_map(data)
    i2t, t2i = cross_modal_maps(
        fitted[name], data["q_image"], data["q_text"], data["image"], data["text"], data["q_labels"], data["labels"]
    )
    assert 0.2 < chance < 0.4
    margin = 0.3
    assert i2t > chance + margin, f"{name} I->T MAP {i2t:.3f} vs random {chance:.3f}"
    assert t2i > chance + margin, f"{name} T->I MAP {t2i:.3f} vs random {chance:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_random_state(name, fitted, data):
    again = FACTORIES[name](random_state=0).fit(data["image"], data["text"], data["labels"])
    for modality in ("image", "text"):
        x = data[f"q_{modality}"]
        np.testing.assert_array_equal(again.encode(x, modality), fitted[name].encode(x, modality))


@pytest.mark.parametrize("name", RANDOMISED)
def test_random_state_is_used(name, fitted, data):
    other = FACTORIES[name](random_state=1).fit(data["image"], data["text"], data["labels"])
    x = data["q_image"]
    assert not np.array_equal(other.encode(x, "image"), fitted[name].encode(x, "image"))


@pytest.mark.parametrize("name", NAMES)
def test_encode_before_fit_raises(name, data):
    model = FACTORIES[name]()
    with pytest.raises(NotFittedError, match="not fitted yet.*call fit"):
        model.encode(data["q_image"], "image")
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


@pytest.mark.parametrize("name", NAMES)
def test_init_stores_parameters_only_and_fit_returns_self(name, data):
    model = FACTORIES[name](random_state=3)
    assert not [k for k in vars(model) if k.endswith("_")]
    params = model.get_params()
    assert params["bits"] == BITS and params["random_state"] == 3
    assert repr(model).startswith(type(model).__name__ + "(bits=16")
    assert model.set_params(random_state=0) is model and model.random_state == 0
    with pytest.raises(ValueError, match="invalid parameter 'nope'"):
        model.set_params(nope=1)
    small = slice(0, 120)
    assert model.fit(data["image"][small], data["text"][small], data["labels"][small]) is model


@pytest.mark.parametrize("name", NAMES)
def test_fit_input_errors_name_argument_and_shapes(name, data):
    model = FACTORIES[name]()
    img, txt, lab = data["image"], data["text"], data["labels"]
    rows = r"must have one row per item of image_x: expected 400 rows, found shape"
    with pytest.raises(ValueError, match=rf"text_x {rows} \(399, 30\)"):
        model.fit(img, txt[:-1], lab)
    with pytest.raises(ValueError, match=r"image_x must be a 2-D array.*found shape \(400,\)"):
        model.fit(img[:, 0], txt, lab)
    with pytest.raises(ValueError, match=rf"labels {rows} \(10, 6\)"):
        model.fit(img, txt, lab[:10])
    with pytest.raises(ValueError, match=r"labels must be multi-hot with values in \{0, 1\}"):
        model.fit(img, txt, 2 * lab)
    bad = img.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="image_x must be finite"):
        model.fit(bad, txt, lab)
    with pytest.raises(ValueError, match="bits must be >= 1, found 0"):
        FACTORIES[name](bits=0).fit(img, txt, lab)
    with pytest.raises(ValueError, match="bits must be an int, found 16.0"):
        FACTORIES[name](bits=16.0).fit(img, txt, lab)
    with pytest.raises(ValueError, match="random_state must be None, a non-negative int"):
        FACTORIES[name](random_state="seed").fit(img, txt, lab)


@pytest.mark.parametrize("name", NAMES)
def test_encode_input_errors(name, fitted, data):
    model = fitted[name]
    with pytest.raises(ValueError, match=r"x must have 40 features \(as seen in fit\), found shape \(200, 30\)"):
        model.encode(data["q_text"], "image")
    with pytest.raises(ValueError, match=r"x must have 30 features \(as seen in fit\), found shape \(200, 40\)"):
        model.encode(data["q_image"], "text")
    with pytest.raises(ValueError, match=r"x must be a 2-D array.*found shape \(40,\)"):
        model.encode(data["q_image"][0], "image")
    with pytest.raises(ValueError, match=r"modality must be one of \('image', 'text'\), found 'audio'"):
        model.encode(data["q_image"], "audio")
    # encode_image / encode_text are the same call
    np.testing.assert_array_equal(model.encode_image(data["q_image"]), model.encode(data["q_image"], "image"))
    np.testing.assert_array_equal(model.encode_text(data["q_text"]), model.encode(data["q_text"], "text"))


def test_sign_codes_maps_zero_to_plus_one():
    codes = sign_codes(np.array([[0.0, -0.0, 1e-300, -1e-300, 2.0, -3.0]]))
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(codes, [[1, 1, 1, -1, 1, -1]])


def test_supervised_methods_require_labels_unsupervised_ignore_them(data):
    img, txt = data["image"], data["text"]
    for cls in (SCMSeq, SePH):
        with pytest.raises(ValueError, match="labels are required"):
            cls(BITS).fit(img, txt, None)
    for name in ("cca_itq", "cmfh"):
        with_labels = FACTORIES[name]().fit(img, txt, data["labels"])
        without = FACTORIES[name]().fit(img, txt, None)
        np.testing.assert_array_equal(with_labels.encode(img, "image"), without.encode(img, "image"))


def test_registry_lists_every_class():
    assert set(BASELINES) == set(FACTORIES)


# --------------------------------------------------------------------------------------
# CCA-ITQ
# --------------------------------------------------------------------------------------


def test_cca_itq_correlations_and_quantization(fitted, data):
    model = fitted["cca_itq"]
    rho = model.correlations_
    assert rho.shape == (BITS,) and np.all(np.diff(rho) <= 1e-12) and 0 < rho[-1] and rho[0] < 1
    assert rho[0] > 0.9  # the class structure is shared by both modalities
    assert len(model.quantization_history_) == 50 and is_non_increasing(model.quantization_history_)
    np.testing.assert_allclose(model.rotation_.T @ model.rotation_, np.eye(BITS), atol=1e-10)
    # canonical pairs: wx_i^T Cxy wy_j = rho_i delta_ij, so with the weights rho^p and the
    # rotation R the projections' cross-covariance is R^T diag(rho^(1 + 2p)) R
    zi = (data["image"] - model.image_mean_) @ model.image_projection_
    zt = (data["text"] - model.text_mean_) @ model.text_projection_
    r, p = model.rotation_, model.eigenvalue_power
    np.testing.assert_allclose(zi.T @ zt / N_TRAIN, r.T @ np.diag(rho ** (1 + 2 * p)) @ r, atol=1e-8)


def test_cca_itq_bits_limited_by_feature_dims(data):
    with pytest.raises(ValueError, match=r"bits must be <= min\(d_image, d_text\) = 30 for CCA-ITQ.*found 31"):
        CCAITQ(31).fit(data["image"], data["text"], data["labels"])


# --------------------------------------------------------------------------------------
# SCM-seq
# --------------------------------------------------------------------------------------


def test_scm_first_bit_objective_is_top_generalized_eigenvalue(fitted, data):
    """Reference built independently: full n x n S and the block generalized eigenproblem."""
    model = fitted["scm_seq"]
    n = N_TRAIN
    x = data["image"] - data["image"].mean(axis=0)
    y = data["text"] - data["text"].mean(axis=0)
    s = label_similarity(data["labels"])
    cxx, cyy = ridge(x.T @ x / n, model.reg), ridge(y.T @ y / n, model.reg)
    c1 = x.T @ (BITS * s) @ y / n**2
    dx, dy = x.shape[1], y.shape[1]
    a = np.block([[np.zeros((dx, dx)), c1], [c1.T, np.zeros((dy, dy))]])
    b = linalg.block_diag(cxx, cyy)
    top = linalg.eigh(a, b, eigvals_only=True)[-1]

    wx, wy = model.image_projection_[:, 0], model.text_projection_[:, 0]
    np.testing.assert_allclose(wx @ cxx @ wx, 1.0, rtol=1e-8)
    np.testing.assert_allclose(wy @ cyy @ wy, 1.0, rtol=1e-8)
    objective = (x @ wx) @ (BITS * s) @ (y @ wy) / n**2
    # the block problem's eigenvalue is w^T A w / w^T B w = 2 wx^T C wy / (wx^T Cxx wx + wy^T Cyy wy)
    np.testing.assert_allclose(objective, top, rtol=1e-8)
    np.testing.assert_allclose(model.eigenvalues_[0], top, rtol=1e-8)
    assert model.n_scm_bits_ == len(model.eigenvalues_) <= BITS
    assert np.all(np.diff(model.eigenvalues_) <= 1e-12)


@pytest.fixture(scope="module")
def nuisance_data(data):
    """The training set plus a strong factor shared by both modalities that has nothing to do
    with the labels: CCA (unsupervised) latches onto it, SCM (supervised) should not."""
    rng = np.random.default_rng(5)
    z = rng.normal(size=(N_TRAIN, 4))
    image = data["image"] + 2.0 * z @ rng.normal(size=(4, 40))
    text = data["text"] + 2.0 * z @ rng.normal(size=(4, 30))
    return image, text, data["labels"]


def test_scm_reconstructs_label_similarity(nuisance_data):
    """Codes' inner products B_x B_y^T against bits * S on the training set: SCM-seq fits S
    better than CCA-ITQ and random codes, both by correlation and by the relative error
    ||bits * S - B_x B_y^T||_F / ||bits * S||_F (which no code reaches 0 on: distinct classes
    would need inner product -bits for every pair of 6 classes)."""
    image, text, labels = nuisance_data
    s = BITS * label_similarity(labels)

    def scores(bx, by):
        g = bx.astype(float) @ by.T.astype(float)
        return np.linalg.norm(s - g) / np.linalg.norm(s), np.corrcoef(s.ravel(), g.ravel())[0, 1]

    def model_scores(model):
        model.fit(image, text, labels)
        return scores(model.encode(image, "image"), model.encode(text, "text"))

    rng = np.random.default_rng(0)
    random_err, random_corr = scores(*(np.where(rng.random((2, N_TRAIN, BITS)) < 0.5, 1, -1)))
    scm_err, scm_corr = model_scores(SCMSeq(BITS))
    cca_err, cca_corr = model_scores(CCAITQ(BITS))
    assert scm_corr > 0.65 and scm_corr > cca_corr + 0.15 and abs(random_corr) < 0.05, (scm_corr, cca_corr)
    assert scm_err < cca_err - 0.04 and scm_err < random_err - 0.1, (scm_err, cca_err, random_err)


def test_scm_without_label_signal_falls_back_to_cca(data):
    """All items share one label: S is all ones, C_1 = 0 after centring, every bit comes from CCA."""
    labels = np.ones((N_TRAIN, 1))
    model = SCMSeq(8).fit(data["image"], data["text"], labels)
    assert model.n_scm_bits_ == 0 and model.eigenvalues_.shape == (0,)
    cca = CCAITQ(8, eigenvalue_power=0.0, n_iter=0).fit(data["image"], data["text"])
    np.testing.assert_allclose(model.image_projection_, cca.image_projection_ @ cca.rotation_.T, atol=1e-8)


def test_scm_bits_are_distinct(fitted, data):
    """The residue update moves each bit away from the earlier ones (without it every bit
    would repeat the first eigenvector)."""
    codes = fitted["scm_seq"].encode(data["image"], "image").astype(np.int64)
    overlap = np.abs(codes.T @ codes) / N_TRAIN
    np.fill_diagonal(overlap, 0.0)
    assert overlap.max() < 0.95


# --------------------------------------------------------------------------------------
# CMFH
# --------------------------------------------------------------------------------------


def test_cmfh_objective_decreases_monotonically(fitted):
    model = fitted["cmfh"]
    hist = model.objective_history_
    assert model.n_iter_ == len(hist) > 5
    assert is_non_increasing(hist), np.diff(hist).max()
    assert hist[-1] < 0.1 * hist[0]


def test_cmfh_history_is_the_objective(fitted, data):
    """The last recorded value equals the objective recomputed from the learnt blocks."""
    model = fitted["cmfh"]
    x1 = ((data["image"] - model.image_mean_) / model.image_scale_).T
    x2 = ((data["text"] - model.text_mean_) / model.text_scale_).T
    u1, u2, p1, p2, v = (model.image_basis_, model.text_basis_, model.image_projection_,
                         model.text_projection_, model.latent_)
    lam, mu, gamma = model.lam, model.mu, model.gamma
    sq = lambda a: np.sum(a * a)  # noqa: E731
    r1, r2 = (model.ridge * np.trace(x @ x.T) / len(x) for x in (x1, x2))  # relative ridge of P1, P2
    assert model.projection_ridge_ == pytest.approx({"image": r1, "text": r2}, rel=1e-12)
    expected = (lam * sq(x1 - u1 @ v) + (1 - lam) * sq(x2 - u2 @ v) + mu * (sq(v - p1 @ x1) + sq(v - p2 @ x2))
                + gamma * (sq(u1) + sq(u2) + sq(v)) + mu * (r1 * sq(p1) + r2 * sq(p2)))
    np.testing.assert_allclose(model.objective_history_[-1], expected, rtol=1e-10)
    # the last V update is the exact minimiser given U1, U2, P1, P2: the V-gradient vanishes
    grad_v = (lam * u1.T @ (u1 @ v - x1) + (1 - lam) * u2.T @ (u2 @ v - x2)
              + mu * (2 * v - p1 @ x1 - p2 @ x2) + gamma * v)
    assert np.linalg.norm(grad_v) < 1e-9 * mu * np.linalg.norm(v)


def test_cmfh_rejects_bad_weights(data):
    for kwargs, msg in [({"lam": 1.0}, "lam must be < 1"), ({"lam": 0.0}, "lam must be > 0.0"),
                        ({"mu": -1.0}, "mu must be > 0.0")]:
        with pytest.raises(ValueError, match=msg):
            CMFH(BITS, **kwargs).fit(data["image"], data["text"])


# --------------------------------------------------------------------------------------
# SePH
# --------------------------------------------------------------------------------------


def test_seph_kl_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    labels = np.eye(3)[rng.integers(3, size=12)]
    labels[0, 1] = 1  # one multi-label item
    p = SePH.affinity(labels)
    h = rng.normal(size=(12, 4))
    for alpha in (0.0, 0.3):
        f = lambda z: SePH.kl_objective(z.reshape(12, 4), p, alpha)[0]  # noqa: E731
        g = lambda z: SePH.kl_objective(z.reshape(12, 4), p, alpha)[2].ravel()  # noqa: E731
        err = optimize.check_grad(f, g, h.ravel(), epsilon=1e-7)
        assert err < 1e-5 * max(1.0, np.linalg.norm(g(h.ravel())))
    # KL against a direct computation of sum P log(P / Q)
    d = 0.25 * ((h[:, None, :] - h[None, :, :]) ** 2).sum(-1)
    w = 1.0 / (1.0 + d)
    np.fill_diagonal(w, 0.0)
    q = w / w.sum()
    pos = p > 0
    np.testing.assert_allclose(SePH.kl_objective(h, p)[1], np.sum(p[pos] * np.log(p[pos] / q[pos])), rtol=1e-10)


def test_seph_objectives_decrease(fitted):
    model = fitted["seph"]
    kl, total = model.kl_history_, model.objective_history_
    assert len(kl) > 10 and is_non_increasing(kl)
    assert kl[-1] < 0.5 * kl[0]
    assert len(total) >= 2 and is_non_increasing(total)
    assert model.final_kl_ < kl[0]


def test_seph_training_codes_near_label_optimum(fitted, data):
    """Relevance is 'shares a label', so ranking by labels reaches MAP 1: the codes come close."""
    model = fitted["seph"]
    lab = data["labels"][model.train_indices_]
    codes = model.codes_
    assert codes.shape == (N_TRAIN, BITS) and codes.dtype == np.int8
    assert mean_average_precision(codes, codes, lab, lab) > 0.9
    # the kernel logistic regressions reproduce most training bits from either modality
    for modality in ("image", "text"):
        agree = np.mean(model.encode(data[modality][model.train_indices_], modality) == codes)
        assert agree > 0.85, (modality, agree)


def test_seph_subsample_and_landmark_cap(data):
    model = SePH(8, n_train=150, n_landmarks=500, max_iter=30, klr_max_iter=30)
    model.fit(data["image"], data["text"], data["labels"])
    assert model.codes_.shape == (150, 8) and len(np.unique(model.train_indices_)) == 150
    assert model.image_landmarks_.shape == (150, 40) and model.text_weights_.shape == (151, 8)


def test_seph_rejects_labels_without_shared_classes(data):
    with pytest.raises(ValueError, match="no two training items share a label"):
        SePH(BITS).fit(data["image"][:6], data["text"][:6], np.eye(6))


# --------------------------------------------------------------------------------------
# Optional smoke test on Wiki (../shared/data/wiki/wiki_roph.mat)
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not WIKI.exists(), reason=f"Wiki data not found at {WIKI}")
def test_wiki_smoke():
    from scipy import io

    d = io.loadmat(WIKI, squeeze_me=True, struct_as_record=False)["data"]
    image, text = np.asarray(d.X1, dtype=np.float64).T, np.asarray(d.X2, dtype=np.float64).T
    labels = d.Y.toarray().T if hasattr(d.Y, "toarray") else np.asarray(d.Y).T
    labels = labels.astype(np.float64)
    tr, te = np.asarray(d.split.ind_train) - 1, np.asarray(d.split.ind_test) - 1
    bits = 32
    rng = np.random.default_rng(0)
    chance = np.mean([
        mean_average_precision(np.where(rng.random((len(te), bits)) < 0.5, 1, -1),
                               np.where(rng.random((len(tr), bits)) < 0.5, 1, -1), labels[te], labels[tr])
        for _ in range(3)
    ])
    models = {
        "cca_itq": CCAITQ(bits),
        "scm_seq": SCMSeq(bits),
        "cmfh": CMFH(bits, max_iter=30),
        "seph": SePH(bits, n_train=500, n_landmarks=200, max_iter=100, klr_max_iter=100),
    }
    for name, model in models.items():
        model.fit(image[tr], text[tr], labels[tr])
        i2t, t2i = cross_modal_maps(model, image[te], text[te], image[tr], text[tr], labels[te], labels[tr])
        assert i2t > chance + 0.08 and t2i > chance + 0.08, (name, i2t, t2i, chance)
