"""DCMH, deep cross-modal hashing (Jiang & Li, CVPR 2017), in adah's trainer.

The objective over the n training items (Eq. 3 of the paper), F = image-net outputs, G =
text-net outputs (n, c), B in {-1, +1}^(n, c), Theta_ij = 1/2 F_i^T G_j:

    J = - sum_ij (S_ij Theta_ij - log(1 + exp(Theta_ij)))        negative log-likelihood
        + gamma (||B - F||_F^2 + ||B - G||_F^2)                   quantization
        + eta (||F^T 1||^2 + ||G^T 1||^2)                         bit balance

Alternating optimisation as the paper's Algorithm 1: a whole pass of the image net over the
epoch's batches with G and B fixed (``step``), then a pass of the text net over the same batches
with F and B fixed (``end_epoch``), then B = sign(gamma (F + G)) in closed form. F and G of every
training item are kept as buffers, refreshed with each batch's outputs; a batch's likelihood runs
against the other modality's buffer of all n items (S is batch x n). The loss of a batch is divided
by n x batch, as DCMH's code divides its gradient. docs/methods.md lists each deviation, and the
settings under which DCMH learns on data like Wiki (the published eta = 1 keeps it at chance there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf

from adah.errors import AdahError
from adah.methods.base import METHODS, LayerTap, Method, MethodSpec, make_optimizer, parse_options, set_lr
from adah.training.similarity import label_overlap


@dataclass
class DCMHOptions:
    gamma: float = 1.0  # quantization weight (the paper's gamma)
    eta: float = 1.0  # bit-balance weight (the paper's eta)
    optimizer: str = "sgd"  # sgd (the paper) | adam
    lr_start: float = 10 ** -1.5  # DCMH's code: lr = logspace(-1.5, -3, epochs), one rate an epoch
    lr_end: float = 1e-3
    momentum: float = 0.0  # plain mini-batch SGD, as the paper

    def validate(self) -> None:
        if self.gamma < 0 or self.eta < 0:
            raise AdahError("train.method_options.gamma and .eta must be >= 0")
        if self.lr_start <= 0 or self.lr_end <= 0:
            raise AdahError("train.method_options.lr_start and .lr_end must be positive")


def pairwise_nll(a: torch.Tensor, b: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
    """- sum_ij (S_ij Theta_ij - log(1 + exp(Theta_ij))) with Theta_ij = 1/2 a_i^T b_j: the negative
    log-likelihood of S under p(S_ij = 1) = sigmoid(Theta_ij) (DCMH's Eq. 2; SSAH's J1, J2)."""
    theta = 0.5 * a @ b.T
    return (nnf.softplus(theta) - sim * theta).sum()  # log(1 + e^t) - S t, stable for large |t|


def dcmh_terms(f_batch: torch.Tensor, g_all: torch.Tensor, sim: torch.Tensor, b_batch: torch.Tensor,
               f_rest_sum: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three terms of J restricted to a batch of one modality (unweighted sums).

    f_batch (m, c): this modality's outputs for the batch; g_all (n, c): the other modality's
    outputs for every training item (fixed); sim (m, n): S of the batch against every item;
    b_batch (m, c): the batch's codes; f_rest_sum (c,): this modality's outputs summed over the
    training items outside the batch (fixed), so ``balance`` is ||F^T 1||^2 of the whole set."""
    nll = pairwise_nll(f_batch, g_all, sim)
    quantization = (b_batch - f_batch).pow(2).sum()
    balance = (f_batch.sum(0) + f_rest_sum).pow(2).sum()
    return {"nll": nll, "quantization": quantization, "balance": balance}


def closed_form_codes(f: torch.Tensor, g: torch.Tensor, gamma: float) -> torch.Tensor:
    """B = sign(gamma (F + G)), with sign(0) = +1 so every bit is defined."""
    return torch.where(gamma * (f + g) >= 0, 1.0, -1.0).to(f.dtype)


def batch_similarity(kind: str, batch_labels: torch.Tensor, train_labels: torch.Tensor,
                     positions: torch.Tensor) -> torch.Tensor:
    """(m, n) float S of a batch against every training item: shared label (``labels``), same
    item (``pairs``) or either (``both``), as loss.similarity says."""
    same = torch.zeros(len(positions), len(train_labels), device=positions.device, dtype=torch.bool)
    same[torch.arange(len(positions), device=positions.device), positions] = True
    if kind == "pairs":
        return same.float()
    shared = label_overlap(batch_labels, train_labels)
    return (shared | same).float() if kind == "both" else shared.float()


class DCMH(Method):
    name = "dcmh"

    def __init__(self, trainer) -> None:
        super().__init__(trainer, parse_options(self.name, DCMHOptions, trainer.config.train.method_options))
        o = self.opts
        self.similarity = trainer.config.loss.similarity
        self.labels = self.train_labels()
        n, bits = len(self.train_rows), trainer.config.model.bits
        self.F = torch.randn(n, bits, device=self.device)
        self.G = torch.randn(n, bits, device=self.device)
        self.B = closed_form_codes(self.F, self.G, o.gamma)
        # F and G are the nets' linear outputs, as DCMH's last fc layer (adah's tanh comes after it)
        self.taps = {k: LayerTap(self.hash_layer(k), "output") for k in ("image", "text")}
        self.opt_image = make_optimizer(o.optimizer, self.image_params, o.lr_start, momentum=o.momentum)
        self.opt_text = make_optimizer(o.optimizer, self.text_params, o.lr_start, momentum=o.momentum)
        self.pending: list[np.ndarray] = []  # the epoch's batches so far (rows), for the text pass

    def lr(self, epoch: int) -> float:
        epochs = self.trainer.config.train.epochs
        rates = np.logspace(np.log10(self.opts.lr_start), np.log10(self.opts.lr_end), epochs)
        return float(rates[min(epoch, epochs - 1)])

    def set_epoch(self, epoch: int) -> None:
        for opt in (self.opt_image, self.opt_text):
            set_lr(opt, self.lr(epoch))

    def _half_step(self, own: torch.Tensor, other: torch.Tensor, out: torch.Tensor, pos: torch.Tensor,
                   sim: torch.Tensor, opt: torch.optim.Optimizer, params: list) -> dict[str, torch.Tensor]:
        """One step of one modality's net: ``own`` is its buffer (F or G), ``other`` the other's."""
        o = self.opts
        rest = own.sum(0) - own[pos].sum(0)
        terms = dcmh_terms(out, other, sim, self.B[pos], rest)
        loss = (terms["nll"] + o.gamma * terms["quantization"] + o.eta * terms["balance"]) / (len(own) * len(pos))
        self.check_finite(loss, "image" if own is self.F else "text")
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()
        own[pos] = out.detach()
        return {**terms, "objective": loss}

    def step(self, rows, images, texts, labels) -> dict[str, float]:
        """The image net's step on a batch, G and B fixed; the batch is kept for the text pass."""
        pos = self.positions(rows)
        sim = batch_similarity(self.similarity, labels, self.labels, pos)
        _, f = self.taps["image"].output_of(lambda: self.branches.image(images))
        terms = self._half_step(self.F, self.G, f, pos, sim, self.opt_image, self.image_params)
        self.pending.append(np.asarray(rows))
        out = {f"image_{k}": float(v.detach()) / len(pos) for k, v in terms.items() if k != "objective"}
        out["objective"] = float(terms["objective"].detach())
        return out

    def text_pass(self) -> dict[str, float]:
        """The text net's pass over the epoch's batches (in the same order), F and B fixed."""
        sums: dict[str, float] = {}
        for rows in self.pending:
            pos = self.positions(rows)
            texts = torch.from_numpy(np.asarray(self.trainer.data.texts[rows], dtype=np.float32)).to(self.device)
            sim = batch_similarity(self.similarity, self.labels[pos], self.labels, pos)
            _, g = self.taps["text"].output_of(lambda: self.model.text(texts))
            terms = self._half_step(self.G, self.F, g, pos, sim, self.opt_text, self.text_params)
            for k, v in terms.items():
                sums[f"text_{k}"] = sums.get(f"text_{k}", 0.0) + float(v.detach()) / (1 if k == "objective" else len(pos))
        batches, self.pending = len(self.pending), []
        return {k: v / max(batches, 1) for k, v in sums.items()}

    def end_epoch(self) -> dict[str, float]:
        record = self.text_pass()
        new = closed_form_codes(self.F, self.G, self.opts.gamma)
        record["b_changed"] = float((new != self.B).float().mean())
        self.B = new
        record["lr"] = self.opt_image.param_groups[0]["lr"]
        return record

    def state_dict(self) -> dict:
        return {"F": self.F.cpu(), "G": self.G.cpu(), "B": self.B.cpu(), "opt_image": self.opt_image.state_dict(),
                "opt_text": self.opt_text.state_dict(), "pending": [r.tolist() for r in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        self.F, self.G, self.B = (state[k].to(self.device) for k in ("F", "G", "B"))
        self.opt_image.load_state_dict(state["opt_image"])
        self.opt_text.load_state_dict(state["opt_text"])
        self.pending = [np.asarray(r, dtype=np.int64) for r in state.get("pending", [])]


METHODS.add("dcmh", MethodSpec(
    "DCMH", DCMH, options=DCMHOptions,
    defaults={"model.attention": "none", "train.batch_size": 128},
))
