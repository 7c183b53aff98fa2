"""DJSRH, deep joint-semantics reconstructing hashing (Su, Zhong, Zhang, ICCV 2019): unsupervised,
it uses no labels, only which image goes with which text.

For a batch of m pairs with image features F_I and text features F_T (the inputs' own features,
each row L2-normalised), the modalities' cosine affinities rescaled to [-1, 1]

    S_I = 2 F_I F_I^T - 1,   S_T = 2 F_T F_T^T - 1,   S~ = beta S_I + (1 - beta) S_T

are fused into the joint-semantics affinity S = (1 - eta) S~ + eta S~ S~^T / m (Eq. 4-5 of the
paper). The codes reconstruct mu S through their cosine similarities (Eq. 7):

    L = ||mu S - cos(B_I, B_T)||^2 + lambda1 ||mu S - cos(B_I, B_I)||^2 + lambda2 ||mu S - cos(B_T, B_T)||^2

(each a mean over the m x m entries, as the authors' code). Both nets take one SGD step on L per
batch. docs/methods.md lists the deviations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from adah.errors import AdahError
from adah.methods.base import METHODS, Method, MethodSpec, make_optimizer, parse_options


@dataclass
class DJSRHOptions:
    """The authors' MIRFlickr-25K settings; on ``wiki`` their Wiki settings (:data:`DATASET_DEFAULTS`)."""

    beta: float = 0.9  # weight of the image affinity in S~
    eta: float = 0.4  # weight of the second-order term S~ S~^T / m
    mu: float = 1.5  # scale of S the codes reconstruct
    lambda1: float = 0.1  # weight of the image-image term
    lambda2: float = 0.1  # weight of the text-text term
    optimizer: str = "sgd"  # sgd (the authors, momentum 0.9, weight decay 5e-4) | adam
    lr_image: float = 0.001
    lr_text: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def validate(self) -> None:
        if not (0 <= self.beta <= 1 and 0 <= self.eta <= 1):
            raise AdahError("train.method_options.beta and .eta must be in [0, 1]")
        if self.mu <= 0 or self.lr_image <= 0 or self.lr_text <= 0:
            raise AdahError("train.method_options.mu, .lr_image and .lr_text must be positive")


# the authors' per-data-set settings (their settings.py); train.method_options still override them
DATASET_DEFAULTS = {"wiki": {"beta": 0.3, "lambda1": 0.3, "lambda2": 0.3, "lr_image": 0.01, "lr_text": 0.01},
                    "nuswide": {"beta": 0.6}}


def joint_affinity(image_features: torch.Tensor, text_features: torch.Tensor, beta: float, eta: float) -> torch.Tensor:
    """(m, d_I), (m, d_T) -> (m, m) joint-semantics affinity S (before the scale mu)."""
    fi, ft = nnf.normalize(image_features.float(), dim=1), nnf.normalize(text_features.float(), dim=1)
    s_tilde = beta * (2 * fi @ fi.T - 1) + (1 - beta) * (2 * ft @ ft.T - 1)
    return (1 - eta) * s_tilde + eta * (s_tilde @ s_tilde.T) / len(s_tilde)


def djsrh_terms(image_codes: torch.Tensor, text_codes: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean squared gaps between ``target`` (mu S) and the codes' cosine similarities, by pair."""
    bi, bt = nnf.normalize(image_codes, dim=1), nnf.normalize(text_codes, dim=1)
    return {"i2t": nnf.mse_loss(bi @ bt.T, target), "i2i": nnf.mse_loss(bi @ bi.T, target),
            "t2t": nnf.mse_loss(bt @ bt.T, target)}


class DJSRH(Method):
    name = "djsrh"
    uses_image_features = True

    def __init__(self, trainer) -> None:
        raw = {**DATASET_DEFAULTS.get(trainer.config.data.name, {}), **trainer.config.train.method_options}
        super().__init__(trainer, parse_options(self.name, DJSRHOptions, raw))
        o = self.opts
        self.opt_image = make_optimizer(o.optimizer, self.image_params, o.lr_image, momentum=o.momentum,
                                        weight_decay=o.weight_decay)
        self.opt_text = make_optimizer(o.optimizer, self.text_params, o.lr_text, momentum=o.momentum,
                                       weight_decay=o.weight_decay)

    def step(self, rows, images, texts, labels) -> dict[str, float]:
        o = self.opts
        target = o.mu * joint_affinity(self.branches.image_features(images), texts, o.beta, o.eta)
        image_out, text_out = self.branches(images, texts)
        terms = djsrh_terms(image_out.codes, text_out.codes, target)
        loss = terms["i2t"] + o.lambda1 * terms["i2i"] + o.lambda2 * terms["t2t"]
        self.check_finite(loss, "reconstruction")
        self.opt_image.zero_grad(set_to_none=True)
        self.opt_text.zero_grad(set_to_none=True)
        loss.backward(inputs=self.image_params + self.text_params)
        self.opt_image.step()
        self.opt_text.step()
        return {**{k: float(v.detach()) for k, v in terms.items()}, "objective": float(loss.detach())}

    def end_epoch(self) -> dict[str, float]:
        return {"lr": self.opt_image.param_groups[0]["lr"]}

    def state_dict(self) -> dict:
        return {"opt_image": self.opt_image.state_dict(), "opt_text": self.opt_text.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt_image.load_state_dict(state["opt_image"])
        self.opt_text.load_state_dict(state["opt_text"])


METHODS.add("djsrh", MethodSpec(
    "DJSRH (unsupervised)", DJSRH, options=DJSRHOptions,
    defaults={"model.attention": "none", "train.batch_size": 32},
))
