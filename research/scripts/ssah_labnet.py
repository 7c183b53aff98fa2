"""SSAH's LabNet alone on Wiki's training labels (issue 31): J1 + J2 (means over the pairs) +
BETA x quantization + label term (both summed per item, divided by the batch of 128), Adam at LR,
B = sign of LabNet's own code buffer every 15 steps. Prints the MAP of sign(H^l) over the training
items by label, the distinct codes and the items whose semantic features are all zero. Usage:

    PYTHONPATH=src python research/scripts/ssah_labnet.py LR STEPS BETA [small]

CONFIG=fashion_products (environment) takes that set's training labels (default wiki); ACT=linear
or tanh LabNet's semantic feature activation (default relu, the authors' code).

(BETA 1 is the quantization weight of SSAH before the fix; 1/32 its mean over 32 bits after it.)
"""
import json
import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)
from adah.config import Config
from adah.data.registry import make_split
from adah.evaluation.metrics import mean_average_precision as MAP
from adah.features.dataset import load_dataset
from adah.methods.dcmh import batch_similarity, closed_form_codes
from adah.methods.ssah import LabelNet, ssah_terms

lr = float(sys.argv[1]); steps = int(sys.argv[2]); beta = float(sys.argv[3]); init = sys.argv[4] if len(sys.argv) > 4 else "torch"
name = os.environ.get("CONFIG", "wiki")
cfg = Config.load(name).override({"data.root": "/work/shared/data"}).validate()
if name != "wiki":  # the labels only: read from the 448-px map cache of the main checkout
    cfg = cfg.override({"data.options.features": f"/work/main/runs/features/{name}448"}).validate()
data = load_dataset(cfg.data, progress=False)
split = make_split(cfg.data, len(data))
L = torch.from_numpy(np.asarray(data.labels[split.train], dtype=np.float32))
n, C, d, bits = len(L), L.shape[1], 512 if name == "wiki" else 256, 32
torch.manual_seed(0)
net = LabelNet(C, 4096, d, bits, os.environ.get("ACT", "relu"))
if init == "small":
    for mod in net.modules():
        if isinstance(mod, torch.nn.Linear):
            torch.nn.init.normal_(mod.weight, std=0.01); torch.nn.init.normal_(mod.bias, std=0.01)
opt = torch.optim.Adam(net.parameters(), lr=lr)
F, H = torch.randn(n, d), torch.randn(n, bits)
B = closed_form_codes(H, H, 1.0)
sgn = lambda x: np.where(x.detach().numpy() >= 0, 1, -1)
g = torch.Generator().manual_seed(0)
step = 0
while step < steps:
    perm = torch.randperm(n, generator=g)
    for i in range(0, n - 127, 128):
        pos = perm[i:i + 128]; lab = L[pos]
        sim = batch_similarity("labels", lab, L, pos)
        f, h, lh = net(lab)
        t = ssah_terms(f, h, lh, F, H, sim, B[pos], lab)
        loss = (t["j1"] + t["j2"]) / (n * 128) + (beta * t["quantization"] + t["label"]) / 128
        opt.zero_grad(); loss.backward(); opt.step()
        F[pos], H[pos] = f.detach(), h.detach()
        step += 1
        if step % 15 == 0:
            B = closed_form_codes(H, H, 1.0)
            with torch.no_grad():
                f, h, _ = net(L)
            dead = int((f.reshape(n, -1).abs().sum(1) == 0).sum())
            print(json.dumps({"step": step, "map": round(MAP(sgn(h), sgn(h), L.numpy(), L.numpy()), 4),
                              "distinct": len({tuple(r) for r in sgn(h).tolist()}), "dead_items": dead,
                              "zero_frac": round(float((f == 0).float().mean()), 4), "fmax": round(float(f.max()), 2),
                              "j1": round(float(t["j1"]) / (n * 128), 4), "j2": round(float(t["j2"]) / (n * 128), 4)}), flush=True)
        if step >= steps:
            break
