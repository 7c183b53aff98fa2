"""Figures: precision-recall curves and attention masks over images (the paper's Fig. 6)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from adah.utils.fileio import user_file_mode


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Save a figure as PNG through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.fchmod(fd, user_file_mode())  # mkstemp makes 0600
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def plot_pr_curves(curves: dict[str, dict[str, dict[str, list[float]]]], path: str | Path, title: str = "") -> Path:
    """One panel per direction. ``curves[method][direction] = {"precision": [...], "recall": [...]}``
    (points by Hamming radius 0..bits, as ``metrics.pr_curve_by_radius`` gives)."""
    plt = _figure()
    directions = list(dict.fromkeys(d for per in curves.values() for d in per))  # first-seen order
    fig, axes = plt.subplots(1, len(directions), figsize=(4.2 * len(directions), 3.8), squeeze=False)
    for ax, direction in zip(axes[0], directions):
        for method, per in curves.items():
            if direction in per:
                pr = per[direction]
                keep = np.asarray(pr["precision"]) > 0  # radii with nothing retrieved have no precision
                ax.plot(np.asarray(pr["recall"])[keep], np.asarray(pr["precision"])[keep], marker=".", label=method)
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"{direction.replace('2', ' -> ').upper()}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_attention_grid(
    images: np.ndarray,
    masks: np.ndarray,
    probs: np.ndarray,
    path: str | Path,
    captions: list[str] | None = None,
    object_masks: np.ndarray | None = None,
) -> Path:
    """A row of three panels per image: the image (object outlines in white when
    ``object_masks`` is given; real photos have none), the binary mask Z over it (unattended
    cells darkened, attended outlined), and the soft attention p as a heat map.

    images (n, 3, H, W) uint8; masks and probs (n, 1, h, w) or (n, h, w); object_masks (n, H, W)."""
    plt = _figure()
    n = len(images)
    masks = masks.reshape(n, *masks.shape[-2:])
    probs = probs.reshape(n, *probs.shape[-2:])
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.25 * n), squeeze=False)
    for i in range(n):
        img = images[i].transpose(1, 2, 0)
        h, w = img.shape[:2]  # nearest-neighbour upsampling of the mask to any image size
        up = masks[i][np.arange(h) * masks.shape[1] // h][:, np.arange(w) * masks.shape[2] // w]
        axes[i, 0].imshow(img)
        if object_masks is not None:
            axes[i, 0].contour(object_masks[i], levels=[0.5], colors="white", linewidths=0.8)
        axes[i, 0].set_title(captions[i] if captions else "image", fontsize=7)
        keep = np.clip(up, 0, 1)  # attention.mask='weight' gives weights above 1
        shaded = (img * (0.25 + 0.75 * keep[..., None])).astype(np.uint8)
        axes[i, 1].imshow(shaded)
        axes[i, 1].contour(keep, levels=[0.5], colors="yellow", linewidths=1.0)
        axes[i, 1].set_title(f"mask Z ({(masks[i] > 0.5).mean():.0%} attended)", fontsize=7)
        axes[i, 2].imshow(probs[i], cmap="magma")
        axes[i, 2].set_title("attention p", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


# (title, [(metrics.jsonl key, label), ...]) of each panel of the training picture
TRAINING_PANELS = (
    ("loss terms", [("objective", "E,D objective"), ("t2i", "T->I"), ("i2t", "I->T"), ("i2i", "I->I"),
                    ("t2t", "T->T"), ("t2i_hat", "T->I_hat"), ("i2t_hat", "I->T_hat")]),
    ("validation MAP", [("val_map", "mean"), ("val_map_i2t", "I->T"), ("val_map_t2i", "T->I"),
                        ("val_map_t2t", "T->T")]),
    ("mask density (probe rows)", [("diag_density_image", "image"), ("diag_density_text", "text"),
                                   ("mask_image", "image, training batches"), ("mask_text", "text, training batches")]),
    ("entropy of p / max", [("diag_entropy_image", "image"), ("diag_entropy_text", "text")]),
    ("mask positions changed since last epoch", [("diag_changed_image", "image"), ("diag_changed_text", "text")]),
    ("G's gain per G step", [("g_gain", "adversarial terms, after - before"), ("adversarial_max", "G objective")]),
    ("object pixels attended (scenes)", [("diag_object_recall", "share of object pixels attended"),
                                         ("diag_attended_on_objects", "share of attended area on objects"),
                                         ("diag_weight_on_objects", "share of G's weight on objects")]),
)


def plot_training(history: list[dict], path: str | Path, title: str = "") -> Path:
    """One picture of a run's metrics.jsonl: loss terms, validation MAP, mask density, entropy of
    p, share of mask positions changed, G's gain per step, and on scenes the object pixels
    attended, each per epoch. Panels with no data are left out."""
    plt = _figure()
    epochs = [r["epoch"] for r in history]
    panels = [(t, [(k, lab) for k, lab in series if any(k in r for r in history)]) for t, series in TRAINING_PANELS]
    panels = [(t, s) for t, s in panels if s]
    cols = 3
    rows = max(1, -(-len(panels) // cols))
    # fixed spacing instead of tight_layout (a third of the figure's cost, paid by every run); the
    # saved PNG is cropped to its content either way (finish_figure -> _save, bbox_inches="tight")
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False,
                             gridspec_kw={"wspace": 0.3, "hspace": 0.55})
    for ax, (name, series) in zip(axes.flat, panels):
        for key, label in series:
            xs = [e for e, r in zip(epochs, history) if key in r]
            ys = [r[key] for r in history if key in r]
            style = "--" if "training batches" in label or key == "adversarial_max" else "-"
            ax.plot(xs, ys, style, marker=".", label=label)
        if name == "G's gain per G step":
            ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return finish_figure(fig, path, title, tight=False)


def finish_figure(fig, path: str | Path, title: str = "", tight: bool = True) -> Path:
    """Title, tight layout, save as PNG (atomically) and close."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    if tight:
        fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_text_attention(texts: list[list[dict]], path: str | Path, titles: list[str] | None = None,
                        words_per_line: int = 14) -> Path:
    """The word-level text attention of several texts, like the image attention grid: one block per
    text, each word on a cell shaded by its soft attention p, the words the mask Z keeps in bold
    with a frame, the dropped ones grey. ``texts[i]``: ``[{"word", "kept", "weight"}, ...]`` (as
    :func:`adah.models.text_encoders.words_of` gives)."""
    if not texts or any(not isinstance(t, list) for t in texts):
        raise ValueError("plot_text_attention: texts must be a non-empty list of word lists")
    plt = _figure()
    lines_per_text = [max(1, -(-len(t) // words_per_line)) for t in texts]
    height = 0.5 + sum(0.42 * n + 0.35 for n in lines_per_text)
    fig = plt.figure(figsize=(11, height))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, words_per_line)
    ax.set_ylim(height, 0)
    ax.axis("off")
    cmap = plt.get_cmap("Oranges")
    y = 0.3
    for i, words in enumerate(texts):
        kept = sum(w["kept"] for w in words)
        title = (titles[i] if titles else f"text {i + 1}") + f"  (keeps {kept} of {len(words)} words)"
        ax.text(0.05, y, title, fontsize=8, color="#444", va="top")
        y += 0.3
        top = max((w["weight"] for w in words), default=1.0) or 1.0
        for j, w in enumerate(words):
            col, row = j % words_per_line, j // words_per_line
            yy = y + 0.42 * row
            ax.add_patch(plt.Rectangle((col + 0.03, yy), 0.94, 0.36, color=cmap(0.02 + 0.55 * w["weight"] / top),
                                       ec="#1f5fbf" if w["kept"] else "none", lw=1.4))
            ax.text(col + 0.5, yy + 0.19, w["word"], ha="center", va="center", fontsize=8,
                    fontweight="bold" if w["kept"] else "normal", color="#000" if w["kept"] else "#777")
        y += 0.42 * lines_per_text[i] + 0.05
    out = _save(fig, path)
    plt.close(fig)
    return out
