"""SSAH, self-supervised adversarial hashing (Li, Deng, Li, Liu, Gao, Tao, CVPR 2018).

A label network LabNet maps each item's label vector to semantic features F^l, codes H^l and a
label reconstruction; it learns first, and its features and codes then supervise the image and
text networks. For each network * in {l, v (image), t (text)} (Eq. 3 and 5 of the paper):

    L^* = alpha J1 + gamma J2 + beta ||B - H^*||^2 + eta ||L^*_hat - L||^2 (+ delta adversarial, v and t)

    J1 = - sum_ij (S_ij Delta_ij - log(1 + e^Delta_ij)),  Delta_ij = 1/2 (F^l_i)^T F^*_j   (semantic features)
    J2 = - sum_ij (S_ij Gamma_ij - log(1 + e^Gamma_ij)),  Gamma_ij = 1/2 (H^l_i)^T H^*_j   (codes)

with F^l, H^l of every training item kept as buffers. Two discriminators D^{v,l}, D^{t,l} learn to
tell a modality's semantic features (target 0) from LabNet's (target 1); the image and text
networks maximise the discriminators' loss on theirs (the min-max of the paper's Eq. 7).
B = sign(H^v + H^t + H^l) once an epoch. J1 and J2 are means over the batch x n pairs and the
quantization a mean over the bits; the label term is summed over the classes. LabNet's semantic
features are linear by default (the authors' code: ReLU; with ReLU on both sides Delta >= 0 and on
one-label sets with many classes the supports go disjoint, every Delta 0) and LabNet takes several
steps a batch (docs/methods.md lists these and the other deviations, with the measurements behind them).
The semantic features of the image and text networks are the input of adah's hash layer (the
last fc of the image head, the text MLP's output), so their sizes must agree; label prediction
heads on them belong to this method. docs/methods.md lists the deviations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn

from adah.errors import AdahError
from adah.methods.base import METHODS, LayerTap, Method, MethodSpec, make_optimizer, parse_options
from adah.methods.dcmh import batch_similarity, closed_form_codes, pairwise_nll

ADVERSARIAL_FORMS = ("minimax", "nonsaturating")  # how the image and text nets meet the discriminators
LABEL_ACTIVATIONS = {"relu": nn.ReLU, "linear": nn.Identity, "tanh": nn.Tanh}  # LabNet's semantic feature layer


@dataclass
class SSAHOptions:
    """Weights as the authors' code (all 1); learning rates: its first values, held, except LabNet's
    (docs/methods.md: at 1e-2 its codes collapse) and the image net's (the text net's 10^-3.5: adah's
    image net is a fresh fc head, not a pretrained CNN-F); LabNet's features and steps: docs/methods.md."""

    alpha: float = 1.0  # J1, semantic features
    gamma: float = 1.0  # J2, codes
    beta: float = 1.0  # quantization
    eta: float = 1.0  # label reconstruction
    delta: float = 1.0  # adversarial (image and text networks)
    label_hidden: int = 4096  # LabNet: labels -> 4096 -> semantic features
    disc_hidden: int = 512  # discriminators: features -> disc_hidden -> disc_hidden -> 1 (paper: 4096)
    lr_label: float = 1e-3  # the authors' code: 1e-2 (a deviation, docs/methods.md)
    lr_image: float = 10 ** -3.5  # the authors' code: 10^-4.5, fine-tuning CNN-F (a deviation, docs/methods.md)
    lr_text: float = 10 ** -3.5
    lr_disc: float = 1e-3
    adversarial: str = "minimax"  # the paper's Eq. 7 | "nonsaturating" (the nets aim at target 1)
    label_steps: int = 5  # LabNet steps a batch (the authors' code: up to 10 passes over the data an epoch)
    label_act: str = "linear"  # LabNet's semantic features: "relu" (the authors' code) | "linear" | "tanh"

    def validate(self) -> None:
        if min(self.alpha, self.gamma, self.beta, self.eta, self.delta) < 0:
            raise AdahError("train.method_options: SSAH's loss weights must be >= 0")
        if min(self.label_hidden, self.disc_hidden, self.label_steps) <= 0:
            raise AdahError("train.method_options.label_hidden, .disc_hidden and .label_steps must be positive")
        if self.adversarial not in ADVERSARIAL_FORMS:
            raise AdahError(f"train.method_options.adversarial must be one of {list(ADVERSARIAL_FORMS)}, "
                            f"got {self.adversarial!r}")
        if self.label_act not in LABEL_ACTIVATIONS:
            raise AdahError(f"train.method_options.label_act must be one of {list(LABEL_ACTIVATIONS)}, "
                            f"got {self.label_act!r}")


class LabelNet(nn.Module):
    """Labels (m, C) -> semantic features (m, d), codes (m, bits) in (-1, 1), labels_hat (m, C)."""

    def __init__(self, num_labels: int, hidden: int, dim: int, bits: int, act: str = "relu") -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(num_labels, hidden), nn.ReLU(), nn.Linear(hidden, dim),
                                      LABEL_ACTIVATIONS[act]())
        self.hash = nn.Linear(dim, bits)
        self.label = nn.Linear(dim, num_labels)

    def forward(self, labels: torch.Tensor):
        f = self.features(labels)
        return f, torch.tanh(self.hash(f)), torch.sigmoid(self.label(f))


def discriminator(dim: int, hidden: int) -> nn.Module:
    """Semantic features (m, dim) -> (m,) logits: from LabNet (1) or from a modality (0)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1), nn.Flatten(0))


def adversarial_term(logits: torch.Tensor, form: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(logged value, loss to minimise) of a modality net against its discriminator's ``logits``
    on its semantic features. ``minimax`` (the paper's Eq. 7: the nets maximise the discriminator's
    loss, target 0): its gradient vanishes as the discriminator grows sure; ``nonsaturating`` (the
    nets minimise the loss of target 1): its gradient grows with the discriminator's certainty."""
    if form == "minimax":
        disc_loss = nnf.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
        return disc_loss, -disc_loss
    fool = nnf.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    return fool, fool


def ssah_terms(feat: torch.Tensor, codes: torch.Tensor, labels_hat: torch.Tensor, label_feat_all: torch.Tensor,
               label_codes_all: torch.Tensor, sim: torch.Tensor, b_batch: torch.Tensor,
               labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """SSAH's four terms for a batch of one network: J1, J2 (NLL sums against every training
    item's LabNet features and codes), quantization and label reconstruction (squared sums)."""
    return {"j1": pairwise_nll(feat, label_feat_all, sim), "j2": pairwise_nll(codes, label_codes_all, sim),
            "quantization": (b_batch - codes).pow(2).sum(), "label": (labels_hat - labels).pow(2).sum()}


class SSAH(Method):
    name = "ssah"

    def __init__(self, trainer) -> None:
        super().__init__(trainer, parse_options(self.name, SSAHOptions, trainer.config.train.method_options))
        o, cfg = self.opts, trainer.config
        labels = self.train_labels()
        if labels.shape[1] == 0 or cfg.loss.similarity == "pairs":
            raise AdahError("train.method 'ssah' learns from labels (its label network); the data has none or "
                            "loss.similarity is 'pairs': use djsrh for collections without labels")
        self.labels, self.similarity = labels, cfg.loss.similarity
        dim_i, dim_t = self.hash_layer("image").in_features, self.hash_layer("text").in_features
        if dim_i != dim_t:
            raise AdahError(f"train.method 'ssah' compares the image and text semantic features with LabNet's: "
                            f"their sizes must agree (image {dim_i}, text {dim_t}); set model.image_fc_dims[-1] "
                            "equal to model.text_hidden[-1]")
        n, bits, c = len(self.train_rows), cfg.model.bits, labels.shape[1]
        self.taps = {k: LayerTap(self.hash_layer(k), "input") for k in ("image", "text")}
        self.nets = nn.ModuleDict({
            "label": LabelNet(c, o.label_hidden, dim_i, bits, o.label_act), "head_image": nn.Linear(dim_i, c),
            "head_text": nn.Linear(dim_t, c), "disc_image": discriminator(dim_i, o.disc_hidden),
            "disc_text": discriminator(dim_t, o.disc_hidden)}).to(self.device)
        self.buffers = {"F_label": torch.randn(n, dim_i, device=self.device)}
        for k in ("H_label", "H_image", "H_text"):
            self.buffers[k] = torch.randn(n, bits, device=self.device)
        self.B = self._codes()
        n_ = self.nets
        self.opts_by_net = {
            "label": make_optimizer("adam", list(n_["label"].parameters()), o.lr_label),
            "image": make_optimizer("adam", self.image_params + list(n_["head_image"].parameters()), o.lr_image),
            "text": make_optimizer("adam", self.text_params + list(n_["head_text"].parameters()), o.lr_text),
            "disc": make_optimizer("adam", list(n_["disc_image"].parameters()) + list(n_["disc_text"].parameters()),
                                   o.lr_disc)}

    def _codes(self) -> torch.Tensor:
        b = self.buffers
        return closed_form_codes(b["H_label"] + b["H_image"], b["H_text"], 1.0)

    def _update(self, which: str, loss: torch.Tensor) -> None:
        self.check_finite(loss, which)
        opt = self.opts_by_net[which]
        params = [p for g in opt.param_groups for p in g["params"]]
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()

    def _weighted(self, terms: dict[str, torch.Tensor], m: int) -> torch.Tensor:
        """J1, J2 means over the pairs and quantization a mean over the bits, as the authors' code; the
        label term a sum over the classes per item (its mean over them lets LabNet collapse: docs)."""
        o, n = self.opts, len(self.train_rows)
        return ((o.alpha * terms["j1"] + o.gamma * terms["j2"]) / (n * m)
                + o.beta * terms["quantization"] / (m * self.B.shape[1]) + o.eta * terms["label"] / m)

    def step(self, rows, images, texts, labels) -> dict[str, float]:
        pos, m, buf = self.positions(rows), len(rows), self.buffers
        sim = batch_similarity(self.similarity, labels, self.labels, pos)
        out: dict[str, float] = {}
        # 1. LabNet
        for _ in range(self.opts.label_steps):
            f_l, h_l, l_hat = self.nets["label"](labels)
            terms = ssah_terms(f_l, h_l, l_hat, buf["F_label"], buf["H_label"], sim, self.B[pos], labels)
            label_loss = self._weighted(terms, m)
            self._update("label", label_loss)
            buf["F_label"][pos], buf["H_label"][pos] = f_l.detach(), h_l.detach()
        out["label_objective"] = float(label_loss.detach())
        # 2. the discriminators: LabNet's features (1) against each modality's (0)
        (image_out, f_i), (text_out, f_t) = (self.taps["image"].output_of(lambda: self.branches.image(images)),
                                             self.taps["text"].output_of(lambda: self.model.text(texts)))
        codes, feats = {"image": image_out.codes, "text": text_out.codes}, {"image": f_i, "text": f_t}
        real = f_l.detach()
        disc_loss = sum(nnf.binary_cross_entropy_with_logits(self.nets[f"disc_{k}"](x), torch.full((m,), float(t),
                                                             device=self.device))
                        for k in codes for x, t in ((feats[k].detach(), 0), (real, 1))) / 4
        self._update("disc", disc_loss)
        out["disc"] = float(disc_loss.detach())
        # 3. the image and text networks against LabNet's features and codes, fooling the discriminators
        total = 0.0
        for k in ("image", "text"):
            terms = ssah_terms(feats[k], codes[k], torch.sigmoid(self.nets[f"head_{k}"](feats[k])), buf["F_label"],
                               buf["H_label"], sim, self.B[pos], labels)
            terms["adversarial"], adv = adversarial_term(self.nets[f"disc_{k}"](feats[k]), self.opts.adversarial)
            loss = self._weighted(terms, m) + self.opts.delta * adv
            self._update(k, loss)
            buf[f"H_{k}"][pos] = codes[k].detach()
            out.update({f"{k}_{t}": float(v.detach()) for t, v in terms.items()})
            total += float(loss.detach())
        out["objective"] = total
        return out

    def end_epoch(self) -> dict[str, float]:
        new = self._codes()
        changed = float((new != self.B).float().mean())
        self.B = new
        return {"b_changed": changed, "lr": self.opts_by_net["image"].param_groups[0]["lr"]}

    def state_dict(self) -> dict:
        return {"nets": self.nets.state_dict(), "B": self.B.cpu(),
                "buffers": {k: v.cpu() for k, v in self.buffers.items()},
                "optimizers": {k: v.state_dict() for k, v in self.opts_by_net.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.nets.load_state_dict(state["nets"])
        self.B = state["B"].to(self.device)
        self.buffers = {k: v.to(self.device) for k, v in state["buffers"].items()}
        for k, opt in self.opts_by_net.items():
            opt.load_state_dict(state["optimizers"][k])


METHODS.add("ssah", MethodSpec(
    "SSAH", SSAH, options=SSAHOptions,
    defaults={"model.attention": "none", "train.batch_size": 128},
))
