"""The ADAH trainer: alternate ``steps_min`` steps minimising the full objective over E and D with
``steps_max`` steps maximising the adversarial terms over G (4 : 1 in the paper).

Writes into ``run_dir``: ``config.json``, ``split.json``, ``metrics.jsonl`` (one line per epoch:
losses by term, mask density, learning rate, validation MAP), ``last.pt`` and ``best.pt``
(best validation MAP: mean of I->T and T->I, validation queries against the training rows).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from adah.checkpoint import save_checkpoint
from adah.config import Config
from adah.data.base import CrossModalData, Split
from adah.errors import AdahError
from adah.evaluate import encode, evaluate_codes
from adah.fileio import atomic_write_text
from adah.losses import ADV_TERMS, adah_objective, adversarial_objective, total_min_objective
from adah.models import ADAH, build_model
from adah.runtime import autocast, batch_tensors, resolve_device, seed_everything


@dataclass
class TrainResult:
    run_dir: Path
    model: ADAH  # the best model by validation MAP (the last one if there is no validation split)
    best_epoch: int
    best_val_map: float
    history: list[dict] = field(default_factory=list)


def adversarial_terms(config: Config) -> tuple[str, ...]:
    """T->I_hat needs image attention, I->T_hat text attention; ``none`` has neither."""
    terms = []
    if config.model.image_attention:
        terms.append("t2i_hat")
    if config.model.text_attention:
        terms.append("i2t_hat")
    return tuple(terms)


def complete_config(config: Config, data: CrossModalData) -> Config:
    """Fill the data-dependent model fields (vocabulary size, image side) and validate."""
    model = config.model
    if model.text_dim in (0, data.text_dim):
        model = replace(model, text_dim=data.text_dim)
    else:
        raise AdahError(f"model.text_dim is {model.text_dim} but the data's texts have {data.text_dim} columns")
    if data.images.ndim == 4 and not model.image_size:
        model = replace(model, image_size=int(data.images.shape[-1]))
    if data.images.ndim == 2:  # precomputed image features
        if model.image_backbone != "mlp":
            raise AdahError(f"the data's images are {data.images.shape[1]}-d feature vectors; set "
                            f"model.image_backbone to 'mlp' (got {model.image_backbone!r})")
        if model.image_dim not in (0, data.images.shape[1]):
            raise AdahError(f"model.image_dim is {model.image_dim} but the image features have "
                            f"{data.images.shape[1]} columns")
        model = replace(model, image_dim=int(data.images.shape[1]))
    elif model.image_backbone == "mlp":
        raise AdahError("model.image_backbone 'mlp' needs image feature vectors, but the data holds pixels")
    return replace(config, model=model).validate()


class Trainer:
    """Holds the model, the two optimizers and their schedules; ``fit`` runs every epoch."""

    def __init__(self, config: Config, data: CrossModalData, split: Split, run_dir: str | Path) -> None:
        self.config = complete_config(config, data)
        self.data, self.split = data, split
        self.data_fingerprint = data.fingerprint()
        self.run_dir = Path(run_dir)
        tc = self.config.train
        if len(split.train) < 2:
            raise AdahError(f"the training split has {len(split.train)} rows; at least 2 are needed")
        self.device = resolve_device(tc.device)
        self.data_gen = seed_everything(tc.seed)
        self.model = build_model(self.config.model).to(self.device)
        self.adv_terms = adversarial_terms(self.config)
        self.min_params = self.model.hashing_parameters()
        self.opt_min = torch.optim.Adam(self.min_params, lr=tc.lr, betas=tuple(tc.betas),
                                        weight_decay=tc.weight_decay)
        self.att_params = att_params = self.model.attention_parameters()
        self.use_max_steps = bool(att_params) and bool(self.adv_terms) and tc.steps_max > 0
        self.opt_max = (torch.optim.Adam(att_params, lr=tc.attention_lr, betas=tuple(tc.betas))
                        if self.use_max_steps else None)
        self.step = 0  # counts optimisation steps of both kinds; the phase is step % cycle
        self.epoch = 0
        self.history: list[dict] = []
        self.best_val_map, self.best_epoch = -math.inf, 0

    def _set_learning_rates(self) -> None:
        """Step decay: base lr * gamma ** (epoch // lr_step_epochs) for both optimizers."""
        tc = self.config.train
        factor = tc.lr_gamma ** (self.epoch // tc.lr_step_epochs)
        for opt, base in ((self.opt_min, tc.lr), (self.opt_max, tc.attention_lr)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base * factor

    # -- one batch ---------------------------------------------------------------------------
    def _batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return batch_tensors(self.data, idx, self.device)

    def is_max_step(self, step: int) -> bool:
        tc = self.config.train
        return self.use_max_steps and step % (tc.steps_min + tc.steps_max) >= tc.steps_min

    def min_step(self, images, texts, labels) -> dict[str, float]:
        """One Adam step of E and D on the full objective; returns each term's value."""
        with autocast(self.device, self.config.train.amp):
            image_out, text_out = self.model(images, texts)
            terms = adah_objective(image_out, text_out, labels, self.config.loss, adversarial=self.adv_terms)
            loss = total_min_objective(terms, self.config.loss)
        self.opt_min.zero_grad(set_to_none=True)
        loss.backward(inputs=self.min_params)  # G is not updated here: skip its gradients
        self.opt_min.step()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["objective"] = float(loss.detach())
        out["mask_image"] = float(image_out.mask.detach().float().mean())
        out["mask_text"] = float(text_out.mask.detach().float().mean())
        return out

    def max_step(self, images, texts, labels) -> dict[str, float]:
        """One Adam step of G that increases the adversarial terms; returns their value."""
        with autocast(self.device, self.config.train.amp):
            image_out, text_out = self.model(images, texts)
            terms = adah_objective(image_out, text_out, labels, self.config.loss, adversarial=self.adv_terms,
                                   detach_queries_of_adversarial=self.config.loss.detach_adversarial_queries)
            adv = adversarial_objective(terms)
        self.opt_max.zero_grad(set_to_none=True)
        (-adv).backward(inputs=self.att_params)  # only G's gradients are needed
        self.opt_max.step()
        return {"adversarial_max": float(adv.detach())}

    # -- epochs ------------------------------------------------------------------------------
    def _epoch_batches(self) -> list[np.ndarray]:
        tc = self.config.train
        train = self.split.train
        order = torch.randperm(len(train), generator=self.data_gen).numpy()
        bs = min(tc.batch_size, len(train))
        batches = [train[order[i : i + bs]] for i in range(0, len(train) - bs + 1, bs)]  # drop the remainder
        if tc.max_batches_per_epoch:
            batches = batches[: tc.max_batches_per_epoch]
        return batches

    def validate(self) -> dict[str, float]:
        """MAP of validation queries against the training rows (never the test queries)."""
        if len(self.split.val) == 0:
            return {}
        kw = {"device": self.device, "batch_size": 256}
        q = encode(self.model, self.data, self.split.val, **kw)
        db = encode(self.model, self.data, self.split.train, **kw)
        return evaluate_codes(q, db, directions=("i2t", "t2i")).map

    def run_epoch(self) -> dict:
        tc = self.config.train
        self.model.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        batches = self._epoch_batches()
        lr_used = self.opt_min.param_groups[0]["lr"]
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{tc.epochs}", disable=not tc.progress, leave=False)
        for idx in bar:
            batch = self._batch(idx)
            stats = self.max_step(*batch) if self.is_max_step(self.step) else self.min_step(*batch)
            self.step += 1
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            if "objective" in stats:
                bar.set_postfix(objective=f"{stats['objective']:.4f}")
        self.epoch += 1
        self._set_learning_rates()
        record = {"epoch": self.epoch, "step": self.step, "lr": lr_used}
        record.update({k: sums[k] / counts[k] for k in sums})
        return record

    def fit(self) -> TrainResult:
        tc = self.config.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.json", json.dumps(self.config.to_dict(), indent=2))
        self.split.save(self.run_dir / "split.json")
        log_path = self.run_dir / "metrics.jsonl"
        log_path.write_text("")
        best_state = None
        for _ in range(tc.epochs):
            t0 = time.perf_counter()
            record = self.run_epoch()
            last = self.epoch == tc.epochs
            if (tc.eval_every and self.epoch % tc.eval_every == 0) or last:
                val = self.validate()
                record.update({f"val_map_{k}": v for k, v in val.items()})
                if val:
                    score = float(np.mean(list(val.values())))
                    record["val_map"] = score
                    if score > self.best_val_map:
                        self.best_val_map, self.best_epoch = score, self.epoch
                        best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                        self._save("best.pt", record)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            self.history.append(record)
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if tc.progress:
                tqdm.write(_format_record(record))
            self._save("last.pt", record)
        if best_state is None:  # no validation rows: the last epoch is the model
            self.best_epoch, self.best_val_map = self.epoch, float("nan")
            self._save("best.pt", self.history[-1])
        else:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return TrainResult(self.run_dir, self.model, self.best_epoch, self.best_val_map, self.history)

    def _save(self, name: str, record: dict) -> None:
        save_checkpoint(
            self.run_dir / name, model=self.model, config=self.config, epoch=self.epoch, step=self.step,
            optimizer_min=self.opt_min.state_dict(),
            optimizer_max=self.opt_max.state_dict() if self.opt_max else None,
            split_sha256=self.split.digest(), data_fingerprint=self.data_fingerprint, metrics=record,
        )


def _format_record(r: dict) -> str:
    parts = [f"epoch {r['epoch']:3d}", f"objective {r.get('objective', float('nan')):.4f}"]
    for k in ADV_TERMS:
        if k in r:
            parts.append(f"{k} {r[k]:.4f}")
    parts.append(f"mask I/T {r.get('mask_image', 1):.2f}/{r.get('mask_text', 1):.2f}")
    if "val_map" in r:
        parts.append(f"val MAP I->T {r['val_map_i2t']:.4f} T->I {r['val_map_t2i']:.4f}")
    parts.append(f"{r['seconds']:.1f}s")
    return " | ".join(parts)


def train(config: Config, data: CrossModalData, split: Split, run_dir: str | Path) -> TrainResult:
    """Train ADAH (or the variant ``config.model.attention`` names) and return the best model."""
    return Trainer(config, data, split, run_dir).fit()
