"""The ADAH trainer: alternate ``steps_min`` steps minimising the full objective over E and D with
``steps_max`` steps maximising the adversarial terms over G (4 : 1 in the paper). Each step takes
its own batch (``train.g_batches='own'``, so E,D see 4 batches of 5), or G's steps reuse the
batch of E,D's last step (``'shared'``: E,D see every batch, as in ``none``).

Writes into ``run_dir``: ``config.json``, ``split.json``, ``metrics.jsonl`` (one line per epoch:
losses by term, mask density, learning rate, validation MAP), ``last.pt`` and ``best.pt``
(best validation MAP: mean of I->T and T->I, validation queries against the training rows).
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from adah.training.checkpoint import (capture_rng, list_checkpoints, load_checkpoint, load_newest, read_resumable,
                                     restore_rng, save_checkpoint, write_resumable)
from adah.training.diagnostics import format_record, probe_diagnostics, probe_rows
from adah.config import Config
from adah.data.base import CrossModalData, Split
from adah.errors import AdahError
from adah.models.parts import check_parts
from adah.utils.distributed import DistContext, wrap_model
from adah.evaluation.retrieval import encode_sharded, validation_metric, validation_scores
from adah.utils.fileio import atomic_write_text
from adah.training import held_maps, precomputed
from adah.training.losses import MIN_TERMS, adah_objective, adversarial_objective, total_min_objective
from adah.models import ADAH, build_model
from adah.models.attention import gates
from adah.models.text_encoders import check_text_inputs
from adah.training.similarity import check_data_for_similarity, get_similarity
from adah.utils.progress import progress_bar
from adah.utils.runtime import amp_policy, autocast, batch_tensors, resolve_device, seed_everything

# moved to adah.training.checkpoint and adah.training.diagnostics; still importable from here
from adah.training.checkpoint import RESUMABLE_CHANGES, check_resume_config, link_atomically  # noqa: F401
from adah.training.diagnostics import PROBE_ROWS, normalised_entropy  # noqa: F401


@dataclass
class TrainResult:
    run_dir: Path
    model: ADAH  # the best model by validation MAP (the last one if there is no validation split)
    best_epoch: int
    best_val_map: float
    history: list[dict] = field(default_factory=list)


def adversarial_terms(config: Config) -> tuple[str, ...]:
    """T->I_hat needs image attention, I->T_hat text attention; ``none`` has neither, and a
    text-only model has no image codes to query with or against."""
    terms = []
    if not config.model.has_image_branch:
        return ()
    if config.model.image_attention:
        terms.append("t2i_hat")
    if config.model.text_attention:
        terms.append("i2t_hat")
    return tuple(terms)


def complete_config(config: Config, data: CrossModalData) -> Config:
    """Fill the data-dependent model fields (vocabulary size, image side) and validate."""
    model = config.model
    check_data_for_similarity(config.loss.similarity, data)
    check_text_inputs(model, data)
    if model.text_dim in (0, data.text_dim):
        model = replace(model, text_dim=data.text_dim)
    else:
        raise AdahError(f"model.text_dim is {model.text_dim} but the data's texts have {data.text_dim} columns")
    if not data.has_images:
        if model.has_image_branch:
            raise AdahError(f"{data.name} has no images (a text-and-labels load); train the text branch alone with "
                            "--set model.image_backbone=none and --attention text or none")
        return replace(config, model=model).validate()
    if not model.has_image_branch:
        raise AdahError("model.image_backbone is 'none' (text only) but the data has images; name a backbone")
    fit_cache = getattr(data.images, "fit_model_config", None)  # cached backbone maps (adah.features.image_cache)
    if fit_cache is not None:
        model = fit_cache(model)  # same backbone and weights as the cache, frozen; its image size
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

    def __init__(self, config: Config, data: CrossModalData, split: Split, run_dir: str | Path, *,
                 diagnostics: tuple[Callable[[ADAH], dict], ...] = (),
                 method: Callable[["Trainer"], object] | None = None) -> None:
        self.config = complete_config(check_parts(config), data)
        get_similarity(self.config.loss.similarity)  # a name no registry knows: refused before training
        self.diagnostics = diagnostics  # extra per-epoch numbers, e.g. object pixels attended on scenes
        self.data, self.split = data, split
        self.data_fingerprint = data.fingerprint()
        vocab = data.text_vocabulary
        self.text_vocabulary = vocab.to_dict() if vocab is not None else None  # saved with every checkpoint
        self.run_dir = Path(run_dir)
        tc = self.config.train
        if len(split.train) < 2:
            raise AdahError(f"the training split has {len(split.train)} rows; at least 2 are needed")
        self.device = resolve_device(tc.device)
        self.dist = DistContext.from_env(use_cuda=self.device.type == "cuda")
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if tc.batch_size % self.dist.world_size:
            raise AdahError(f"train.batch_size {tc.batch_size} must be divisible by {self.dist.world_size} processes")
        self.data_gen = seed_everything(tc.seed)
        self.model = build_model(self.config.model, self.config.attention).to(self.device)
        if amp_policy(self.device, tc.amp).channels_last:  # faster convolutions under bf16 on GPUs
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = wrap_model(self.model, self.dist, self.device)  # DDP when run by torchrun
        self.adv_terms = adversarial_terms(self.config)
        # model selection: mean validation MAP of I->T and T->I (T->T for a text-only model)
        self.val_directions = ("i2t", "t2i") if self.config.model.has_image_branch else ("t2t",)
        self.val_metric = validation_metric(self.config.loss.similarity, data.labels)
        self.attended = "I" * self.config.model.image_attention + "T" * self.config.model.text_attention
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
        self.epoch_state: dict | None = None  # batch order, position and sums of the epoch in progress
        self.probe_rows = probe_rows(split)  # fixed rows whose masks are watched from epoch to epoch
        self.probe_masks: dict[str, np.ndarray] = {}  # their masks at the last epoch end
        # train.method's steps (DCMH, ...; adah.methods.build_method, passed in by adah.methods.train):
        # step(rows, images, texts, labels), end_epoch(), set_epoch(epoch), state_dict(); None: ADAH's own
        self.method = method(self) if method is not None else None
        if self.method is None and tc.method != "adah":
            raise AdahError(f"train.method is {tc.method!r}: train it with adah.methods.train (adah train --method, "
                            "adah benchmark), not adah.training.train")
        # the fast paths on cached maps: D over pooled parts computed once per item (adah.training.precomputed),
        # else G, pooling and D over maps held in memory (adah.training.held_maps), else None: over the maps
        self.fast = precomputed.plan(self) or held_maps.plan(self)  # also set self.training_path (which path, why)
        if self.fast is not None:
            self.net = self.fast.net
            self.probe_diagnostics = functools.partial(self.fast.probe_diagnostics, self.probe_diagnostics)

    @property
    def branches(self) -> torch.nn.Module:
        """What a training step runs the branches with on the batches :meth:`_batch` gives: the model
        over the data's images (or the maps held in memory, :mod:`adah.training.held_maps`), or on the
        pooled fast path :class:`adah.training.precomputed.PooledModel` over the precomputed rows (the
        same parameters, the same outputs up to float rounding); all
        answer ``branches(images, texts)``, ``branches.image(images)``, ``branches.image_features(images)``."""
        return self.fast.net if self.fast else self.model

    def _set_learning_rates(self) -> None:
        """Step decay: base lr * gamma ** (epoch // lr_step_epochs) for both optimizers."""
        tc = self.config.train
        factor = tc.lr_gamma ** (self.epoch // tc.lr_step_epochs)
        for opt, base in ((self.opt_min, tc.lr), (self.opt_max, tc.attention_lr)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base * factor
        if self.method is not None:
            self.method.set_epoch(self.epoch)

    # -- one batch ---------------------------------------------------------------------------
    def _batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return batch_tensors(self.fast.data if self.fast else self.data, idx, self.device)

    def is_max_step(self, step: int) -> bool:
        """A G step: after ``attention.warmup_epochs``, the last ``steps_max`` of each cycle."""
        tc = self.config.train
        if not self.use_max_steps or self.epoch < self.config.attention.warmup_epochs:
            return False
        return step % (tc.steps_min + tc.steps_max) >= tc.steps_min

    def _set_mask_mode(self, soft: bool) -> None:
        for gate in gates(self.model):
            gate.soft = soft

    def _terms(self, images, texts, labels, *, for_max: bool) -> tuple[dict, object, object]:
        """Forward this process's share of the batch; rank it against the whole batch."""
        ctx = self.dist
        image_out, text_out = self.net(images, texts)
        database = None
        if ctx.enabled:  # every process's codes, with gradients flowing back to their owners
            gather = lambda out: out and out._replace(codes=ctx.gather(out.codes), codes_hat=ctx.gather(out.codes_hat))  # noqa: E731
            database = (gather(image_out), gather(text_out), ctx.gather(labels))
        detach = for_max and self.config.loss.detach_adversarial_queries
        terms = adah_objective(image_out, text_out, labels, self.config.loss, adversarial=self.adv_terms,
                               detach_queries_of_adversarial=detach, database=database,
                               sum_counts=ctx.sum if ctx.enabled else None,
                               query_offset=ctx.rank * len(texts) if ctx.enabled else 0)
        return terms, image_out, text_out

    def _backward(self, loss: torch.Tensor, params: list) -> None:
        if self.dist.enabled:
            # DDP averages gradients over processes; each process holds a 1/world share of the loss
            (loss * self.dist.world_size).backward()
        else:
            loss.backward(inputs=params)  # only the gradients this step applies

    def _logged(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Detached floats; terms summed over processes (their shares add up to the batch's loss)."""
        return {k: float(self.dist.sum(v.detach())) for k, v in values.items()}

    def min_step(self, images, texts, labels) -> dict[str, float]:
        """One Adam step of E and D on the full objective; returns each term's value."""
        with autocast(self.device, self.config.train.amp):
            terms, image_out, text_out = self._terms(images, texts, labels, for_max=False)
            loss = total_min_objective(terms, self.config.loss)
        self.opt_min.zero_grad(set_to_none=True)
        self._backward(loss, self.min_params)
        self.opt_min.step()
        out = self._logged({**terms, "objective": loss})
        world = self.dist.world_size
        if image_out is not None:
            out["mask_image"] = float(self.dist.sum(image_out.mask.detach().float().mean())) / world
        out["mask_text"] = float(self.dist.sum(text_out.mask.detach().float().mean())) / world
        return out

    def max_step(self, images, texts, labels) -> dict[str, float]:
        """One Adam step of G that increases the adversarial terms (``attention.objective =
        'full'``: and decreases the attended ranking terms); returns their value and G's gain,
        the adversarial terms after the step minus before it, on the same batch."""
        ac = self.config.attention
        with autocast(self.device, self.config.train.amp):
            terms, _, _ = self._terms(images, texts, labels, for_max=True)
            adv = adversarial_objective(terms)
            loss = -adv
            if ac.objective == "full":
                loss = loss + sum(terms[n] for n in MIN_TERMS if n in terms)
        self.opt_max.zero_grad(set_to_none=True)
        self._backward(loss, self.att_params)
        if ac.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.att_params, ac.grad_clip)
        self.opt_max.step()
        after = self._adversarial_now(images, texts, labels)
        return {**self._logged({"adversarial_max": adv}), "g_gain": after - float(self.dist.sum(adv.detach()))}

    @torch.no_grad()
    def _adversarial_now(self, images, texts, labels) -> float:
        """The adversarial terms on a batch with the current weights, leaving BatchNorm statistics
        (and so training) exactly as they were."""
        buffers = [b.clone() for b in self.model.buffers()]
        with autocast(self.device, self.config.train.amp):
            terms, _, _ = self._terms(images, texts, labels, for_max=True)
        for b, saved in zip(self.model.buffers(), buffers):
            b.copy_(saved)
        return float(self.dist.sum(adversarial_objective(terms)))

    # -- epochs ------------------------------------------------------------------------------
    def batches_per_pass(self) -> int:
        """Batches in one pass over the training pairs (the remainder is dropped)."""
        return len(self.split.train) // min(self.config.train.batch_size, len(self.split.train))

    def passes_per_epoch(self) -> int:
        """1, or with ``train.min_steps`` the passes an epoch makes so that ``train.epochs`` epochs
        give at least that many optimiser steps (steps of both kinds counted)."""
        tc = self.config.train
        if not tc.min_steps:
            return 1
        return max(1, math.ceil(tc.min_steps / (tc.epochs * self.batches_per_pass())))

    def _new_epoch_state(self) -> dict:
        """Draw the epoch's batch order (one permutation a pass); the position and running sums
        make it resumable."""
        n = len(self.split.train)
        order = torch.cat([torch.randperm(n, generator=self.data_gen) for _ in range(self.passes_per_epoch())])
        return {"order": order.numpy(), "pos": 0, "sums": {}, "counts": {}, "lr": self.opt_min.param_groups[0]["lr"]}

    def _epoch_batches(self, order: np.ndarray) -> list[np.ndarray]:
        tc = self.config.train
        train = self.split.train
        n, bs = len(train), min(tc.batch_size, len(train))
        batches = [train[order[p + i : p + i + bs]]  # each pass drops its own remainder
                   for p in range(0, len(order), n) for i in range(0, n - bs + 1, bs)]
        return batches[: tc.max_batches_per_epoch] if tc.max_batches_per_epoch else batches

    def validate(self) -> dict[str, float]:
        """MAP of validation queries against the training rows (never the test queries)."""
        if len(self.split.val) == 0:
            return {}
        kw = {"device": self.device, "batch_size": 256}
        model, data = self.branches, (self.fast.data if self.fast else self.data)
        q = encode_sharded(model, data, self.split.val, self.dist, **kw)
        db = encode_sharded(model, data, self.split.train, self.dist, **kw)
        return validation_scores(q, db, self.val_directions, self.config.loss.similarity)

    def run_epoch(self) -> dict:
        """Run (the rest of) one epoch; checkpoints every ``train.checkpoint_every`` steps."""
        tc = self.config.train
        self.model.train()
        self._set_mask_mode(self.epoch < self.config.attention.soft_epochs)
        if self.epoch_state is None:
            self.epoch_state = self._new_epoch_state()
        st = self.epoch_state
        batches = self._epoch_batches(st["order"])
        bar = progress_bar(total=len(batches), initial=st["pos"], desc=f"epoch {self.epoch + 1}/{tc.epochs}",
                           disable=not tc.progress or not self.dist.is_main, leave=False)
        shared = tc.g_batches == "shared"
        while st["pos"] < len(batches):
            rows = self.dist.shard(batches[st["pos"]])
            batch = self._batch(rows)
            if self.method is not None:
                stats = self.method.step(rows, *batch)
            else:
                stats = self.max_step(*batch) if self.is_max_step(self.step) else self.min_step(*batch)
            self.step += 1
            while shared and self.is_max_step(self.step):  # G's steps on the batch E,D just used
                stats.update(self.max_step(*batch))
                self.step += 1
            st["pos"] += 1
            check_finite_training(self, stats)
            for k, v in stats.items():
                st["sums"][k] = st["sums"].get(k, 0.0) + v
                st["counts"][k] = st["counts"].get(k, 0) + 1
            bar.update(1)
            if "objective" in stats:
                bar.set_postfix(objective=f"{stats['objective']:.4f}")
            if (tc.checkpoint_every and self.step % tc.checkpoint_every == 0 and st["pos"] < len(batches)
                    and self.dist.is_main):
                self.save_resumable()
        bar.close()
        method_record = self.method.end_epoch() if self.method is not None else {}
        check_finite_training(self)  # before the epoch's validation, best.pt and checkpoint
        self._set_mask_mode(False)  # validation, diagnostics and test codes use the hard mask
        self.epoch += 1
        self._set_learning_rates()
        record = {"epoch": self.epoch, "step": self.step, "lr": st["lr"]}
        if tc.min_steps:
            record["passes"] = self.passes_per_epoch()
        record.update({k: st["sums"][k] / st["counts"][k] for k in st["sums"]})
        record.update(method_record)
        self.epoch_state = None
        return record

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until ``train.epochs``; with ``resume`` continue from the newest checkpoint in
        ``run_dir/checkpoints`` (same config required), giving exactly the uninterrupted result."""
        tc = self.config.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        existing = list_checkpoints(self.run_dir)
        main = self.dist.is_main  # only the first process writes files and prints
        if resume and existing:
            resumed = load_newest(existing, self.load_resumable)  # a damaged newest one: the one before
            if tc.progress and main:
                tqdm.write(f"resuming from {resumed} (epoch {self.epoch}, step {self.step})")
        elif existing:
            raise AdahError(f"{self.run_dir} already holds checkpoints of a run; pass --resume to continue it "
                            "or choose another output folder")
        elif main:
            atomic_write_text(self.run_dir / "config.json", json.dumps(self.config.to_dict(), indent=2))
            self.split.save(self.run_dir / "split.json")
            if self.data.text_vocabulary is not None:  # what query text is encoded with later
                self.data.text_vocabulary.save(self.run_dir / "vocabulary.json")
            atomic_write_text(self.run_dir / "metrics.jsonl", "")
        if main:
            atomic_write_text(self.run_dir / "training_path.json", json.dumps(self.training_path, indent=2) + "\n")
            if tc.progress:
                tqdm.write(f"training path: {self.training_path['path']} ({self.training_path['reason']})")
        passes = self.passes_per_epoch()
        if passes > 1 and tc.progress and main:
            tqdm.write(f"train.min_steps {tc.min_steps}: {passes} passes over the {len(self.split.train)} training "
                       f"pairs an epoch ({tc.epochs * passes * self.batches_per_pass()} steps in all)")
        while self.epoch < tc.epochs:
            t0 = time.perf_counter()
            record = self.run_epoch()
            record.update(self.probe_diagnostics())
            for fn in self.diagnostics:
                record.update(fn(self.model))
            self.model.train()
            last = self.epoch == tc.epochs
            if (tc.eval_every and self.epoch % tc.eval_every == 0) or last:
                val = self.validate()
                record.update({f"val_map_{k}": v for k, v in val.items()})
                if val:
                    record["val_map"] = score = float(np.mean(list(val.values())))
                    if score > self.best_val_map:
                        self.best_val_map, self.best_epoch = score, self.epoch
                        if main:
                            self._save_model("best.pt", record)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            self.history.append(record)
            if main:
                self._append_log(record)
                if tc.progress:
                    tqdm.write(format_record(record, self.val_metric, self.attended))
                self.save_resumable()
        if not math.isfinite(self.best_val_map):  # no validation rows: the last epoch is the model
            self.best_epoch, self.best_val_map = self.epoch, float("nan")
            if main:
                self._save_model("best.pt", self.history[-1] if self.history else {})
        if main and self.history:
            from adah.evaluation.plots import plot_training

            plot_training(self.history, self.run_dir / "training.png", title=self._plot_title())
        self.dist.barrier()  # best.pt is complete before any process reads it
        self.model.load_state_dict(load_checkpoint(self.run_dir / "best.pt")["model"])
        self.model.eval()
        return TrainResult(self.run_dir, self.model, self.best_epoch, self.best_val_map, self.history)

    def _plot_title(self) -> str:
        c = self.config
        return f"{c.data.name}, attention {c.model.attention}, {c.model.bits} bits, seed {c.train.seed}"

    def probe_diagnostics(self) -> dict[str, float]:
        """G's state on the fixed probe rows with the hard mask (:func:`adah.training.diagnostics.probe_diagnostics`:
        mask density, normalised entropy, share changed since the last epoch end)."""
        return probe_diagnostics(self.model, self.config, self.data, self.probe_rows, self.device, self.probe_masks)

    def _append_log(self, record: dict) -> None:
        """Rewrite metrics.jsonl from the history (atomic), so a resumed run never duplicates lines."""
        atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))

    # -- checkpoints -------------------------------------------------------------------------
    def _save_model(self, name: str, record: dict) -> None:
        save_checkpoint(self.run_dir / name, model=self.model, config=self.config, epoch=self.epoch, step=self.step,
                        split_sha256=self.split.digest(), data_fingerprint=self.data_fingerprint, metrics=record,
                        text_vocabulary=self.text_vocabulary)

    def save_resumable(self) -> Path:
        """Everything needed to continue exactly: weights, both optimizers, counters, the epoch's
        order and position, every RNG state, the best score so far. Keeps the newest
        ``train.keep_checkpoints`` files and points ``last.pt`` at the newest. Never writes
        non-finite weights (:func:`check_finite_training`)."""
        check_finite_training(self)
        return write_resumable(
            self.run_dir, keep=self.config.train.keep_checkpoints, model=self.model, config=self.config,
            epoch=self.epoch, step=self.step,
            optimizer_min=self.opt_min.state_dict(),
            optimizer_max=self.opt_max.state_dict() if self.opt_max else None,
            epoch_state=self.epoch_state, rng=capture_rng(self.data_gen), history=self.history,
            probe_masks={k: np.packbits(v, axis=1) for k, v in self.probe_masks.items()},
            probe_shapes={k: v.shape for k, v in self.probe_masks.items()},
            best_val_map=self.best_val_map, best_epoch=self.best_epoch,
            method_state=self.method.state_dict() if self.method is not None else None,
            split_sha256=self.split.digest(), data_fingerprint=self.data_fingerprint,
            metrics=self.history[-1] if self.history else {}, text_vocabulary=self.text_vocabulary,
        )

    def load_resumable(self, path: Path) -> None:
        """Continue from a checkpoint :meth:`save_resumable` wrote (refused when it is of another
        config, split or data: :func:`adah.training.checkpoint.read_resumable`)."""
        payload = read_resumable(path, self.config, self.split.digest(), self.data_fingerprint)
        self.model.load_state_dict(payload["model"])
        self.opt_min.load_state_dict(payload["optimizer_min"])
        if self.opt_max is not None:
            self.opt_max.load_state_dict(payload["optimizer_max"])
        self.epoch, self.step = payload["epoch"], payload["step"]
        self.epoch_state = payload["epoch_state"]
        self.history = payload["history"]
        self.best_val_map, self.best_epoch = payload["best_val_map"], payload["best_epoch"]
        restore_rng(payload["rng"], self.data_gen)
        if self.method is not None:
            self.method.load_state_dict(payload["method_state"])
        shapes = payload.get("probe_shapes") or {}
        self.probe_masks = {k: np.unpackbits(v, axis=1, count=shapes[k][1]).astype(bool)
                            for k, v in (payload.get("probe_masks") or {}).items()}
        self._set_learning_rates()  # the rate of the epoch in progress follows from completed epochs


def check_finite_training(trainer: Trainer, stats: dict[str, float] | None = None) -> None:
    """Stop training with a one-line AdahError naming the epoch and step when a step's logged
    loss terms (``stats``) or, without ``stats``, the model's weights are NaN or infinite; the
    checkpoints already written (all from finite weights) are kept, nothing more is written."""
    if stats is not None:
        bad = sorted(k for k, v in stats.items() if not math.isfinite(v))
        bad.sort(key=lambda k: k != "objective")  # the objective first, then up to two terms
        what = f"loss term(s) {', '.join(f'{k}={stats[k]}' for k in bad[:3])}{' ...' if len(bad) > 3 else ''}"
    else:
        bad = [n for n, p in trainer.model.named_parameters() if not bool(torch.isfinite(p).all())]
        what = f"{len(bad)} weight tensor(s) (e.g. {bad[0] if bad else ''})"
    if not bad:
        return
    kept = list_checkpoints(trainer.run_dir)
    tail = f"the last good checkpoint, {kept[-1]}, is kept" if kept else "no checkpoint was written"
    raise AdahError(f"training stopped at epoch {trainer.epoch + 1}, step {trainer.step}: {what} not finite "
                    f"(NaN or infinite); {tail}; lower train.lr / train.attention_lr or check the data")


def train(config: Config, data: CrossModalData, split: Split, run_dir: str | Path, *,
          resume: bool = False, diagnostics: tuple[Callable[[ADAH], dict], ...] = (),
          method: Callable[[Trainer], object] | None = None) -> TrainResult:
    """Train ADAH (or the variant ``config.model.attention`` names) and return the best model.

    ``resume=True`` continues the run in ``run_dir`` from its newest checkpoint. ``diagnostics``
    are called with the model after each epoch; the numbers they return go into metrics.jsonl."""
    return Trainer(config, data, split, run_dir, diagnostics=diagnostics, method=method).fit(resume=resume)
