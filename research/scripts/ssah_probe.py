"""SSAH on Wiki, epoch by epoch (issue 31): LabNet's codes retrieving the training items by label
(MAP of sign(H^l), distinct codes), the image / text buffers' codes against LabNet's, validation MAP,
the share of zero semantic features, and the gradient norm of each weighted term of the image and
text losses on one batch. Usage (repository root, ADAH data under /work/shared/data):

    PYTHONPATH=src python research/scripts/ssah_probe.py EPOCHS [dotted.key=JSON ...]
    e.g. ... ssah_probe.py 5 train.method_options.delta=0 'train.method_options.adversarial="nonsaturating"'
"""
import json
import sys

import numpy as np
import torch

torch.set_num_threads(1)
import torch.nn.functional as nnf

from adah.config import Config
from adah.data.registry import make_split
from adah.evaluation.metrics import mean_average_precision as MAP
from adah.features.dataset import load_dataset
from adah.methods import build_method, method_overrides
from adah.training.similarity import with_label_policy
from adah.training.trainer import Trainer

try:
    from adah.methods.ssah import adversarial_term
except ImportError:  # ssah.py before the fix
    adversarial_term = None

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
sets = dict(a.split("=", 1) for a in sys.argv[2:])
sets = {k: json.loads(v) for k, v in sets.items()}
cfg = Config.load("wiki").override(method_overrides("ssah")).override(
    {"train.epochs": epochs, "train.seed": 0, "train.progress": False, "data.root": "/work/shared/data", **sets}).validate()
cfg = with_label_policy(cfg)
data = load_dataset(cfg.data, progress=False)
split = make_split(cfg.data, len(data))
tr = Trainer(cfg, data, split, "runs/ssah-probe", method=build_method)
m = tr.method
L = m.labels.cpu().numpy()
sgn = lambda x: np.where(x.detach().cpu().numpy() >= 0, 1, -1)

def grad_norms():
    # gradient norm of each term of the image / text loss on one batch
    rows = split.train[:128]
    images, texts, labels = tr._batch(rows)
    pos = m.positions(rows)
    from adah.methods.dcmh import batch_similarity
    from adah.methods.ssah import ssah_terms
    sim = batch_similarity(m.similarity, labels, m.labels, pos)
    res = {}
    mm, o = len(rows), m.opts
    for k, fwd, params in (("image", lambda: m.model.image(images), m.image_params), ("text", lambda: m.model.text(texts), m.text_params)):
        out, f = m.taps[k].output_of(fwd)
        terms = ssah_terms(f, out.codes, torch.sigmoid(m.nets[f"head_{k}"](f)), m.buffers["F_label"], m.buffers["H_label"], sim, m.B[pos], labels)
        logits = m.nets[f"disc_{k}"](f)
        if adversarial_term is None:  # ssah.py before the fix (b263ee0): the non-saturating form only
            terms["adversarial"] = nnf.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        else:
            _, terms["adversarial"] = adversarial_term(logits, o.adversarial)
        zero = {t: torch.zeros(()) for t in ("j1", "j2", "quantization", "label")}
        for t, v in terms.items():
            weighted = o.delta * v if t == "adversarial" else m._weighted({**zero, t: v}, mm)  # the method's own weights
            g = torch.autograd.grad(weighted, params, retain_graph=True, allow_unused=True)
            res[f"g_{k}_{t}"] = float(torch.sqrt(sum((x ** 2).sum() for x in g if x is not None)))
        res[f"{k}_featmean"] = float(f.detach().mean()); res[f"{k}_featzero"] = float((f == 0).float().mean())
        res[f"{k}_codeabs"] = float(out.codes.detach().abs().mean())
    return res

for ep in range(epochs):
    rec = tr.run_epoch()
    with torch.no_grad():
        f_l, h_l, _ = m.nets["label"](m.labels)
    hl_buf = sgn(m.buffers["H_label"]); hl_now = sgn(h_l)
    Hi, Ht = sgn(m.buffers["H_image"]), sgn(m.buffers["H_text"])
    r = {"ep": ep + 1,
         "lab_buf_map": MAP(hl_buf, hl_buf, L, L), "lab_now_map": MAP(hl_now, hl_now, L, L),
         "img_buf_vs_lab": MAP(Hi, hl_now, L, L), "txt_buf_vs_lab": MAP(Ht, hl_now, L, L),
         "i2t_buf": MAP(Hi, Ht, L, L), "B_map": MAP(sgn(m.B), sgn(m.B), L, L),
         "Fl_mean": float(f_l.mean()), "Fl_zero": float((f_l == 0).float().mean()), "hl_abs": float(h_l.abs().mean()),
         "distinct_hl": len({tuple(r) for r in hl_now.tolist()}),
         **{k: rec[k] for k in rec if k in ("label_objective", "disc", "image_j1", "image_j2", "image_quantization", "image_adversarial", "text_j1", "text_j2", "text_quantization", "text_adversarial", "b_changed")}}
    r.update(tr.validate()); r.update(grad_norms())
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
