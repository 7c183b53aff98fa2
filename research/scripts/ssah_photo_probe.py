"""SSAH on a photo set (issue 31, fashion_products): which network's semantic features die, and when.
Per epoch, over the training items: the share of exactly-zero semantic features of LabNet, the image
net and the text net, how many items have all-zero features, how many of the d units are alive (non
zero for some item), the mean Delta = 1/2 F^l_i . F^*_j over similar and dissimilar pairs (image,
text against LabNet's current features), the J1 / J2 per pair (the epoch's mean), the MAP of LabNet's codes sign(H^l) over the training
items by label, validation MAP.
Usage (repository root; the 448-px map cache of the main checkout is read, never written):

    OMP_NUM_THREADS=1 PYTHONPATH=src python research/scripts/ssah_photo_probe.py EPOCHS [dotted.key=JSON ...]
    e.g. ... ssah_photo_probe.py 40 train.method_options.label_act='"relu"' train.method_options.label_steps=1

CONFIG=coco_mini (environment) probes coco_mini; FEATURES overrides the cache folder; SEED the seed.
"""
import json
import os
import sys

import torch

torch.set_num_threads(1)
from adah.config import Config
from adah.data.registry import make_split
from adah.evaluation.metrics import mean_average_precision
from adah.features.dataset import load_dataset
from adah.methods import build_method, method_overrides
from adah.training.similarity import with_label_policy
from adah.training.trainer import Trainer

name = os.environ.get("CONFIG", "fashion_products")
features = os.environ.get("FEATURES", f"/work/main/runs/features/{name}448")
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
sets = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])}
cfg = with_label_policy(Config.load(name).override(method_overrides("ssah")).override(
    {"data.root": "/work/shared/data", "data.options.features": features, "train.epochs": epochs,
     "train.seed": int(os.environ.get("SEED", "0")), "train.progress": False, **sets}).validate())
data = load_dataset(cfg.data, progress=False)
split = make_split(cfg.data, len(data))
tr = Trainer(cfg, data, split, f"runs/ssah-photo-probe-{name}", method=build_method)
m = tr.method
L = m.labels
S = (L @ L.T > 0).float()
print(json.dumps({"n": len(L), "similar_share": round(float(S.mean()), 4), "path": tr.training_path["path"]}), flush=True)


@torch.no_grad()
def features_of(k: str) -> torch.Tensor:
    out = []
    for lo in range(0, len(split.train), 256):
        images, texts, _ = tr._batch(split.train[lo:lo + 256])
        x, net = (images, m.branches.image) if k == "image" else (texts, m.model.text)
        out.append(m.taps[k].output_of(lambda: net(x))[1])  # noqa: B023 (called at once)
    return torch.cat(out)


def stats(tag: str, f: torch.Tensor, f_l: torch.Tensor | None) -> dict:
    r = {f"{tag}_zero": float((f == 0).float().mean()), f"{tag}_dead_items": int((f.abs().sum(1) == 0).sum()),
         f"{tag}_live_units": int((f.abs().sum(0) > 0).sum()), f"{tag}_abs": float(f.abs().mean())}
    if f_l is not None:
        delta = 0.5 * f_l @ f.T
        r[f"{tag}_delta_sim"], r[f"{tag}_delta_dis"] = float(delta[S > 0].mean()), float(delta[S == 0].mean())
    return r


n, mm = len(split.train), cfg.train.batch_size
for ep in range(epochs):
    rec = tr.run_epoch()
    tr.model.eval()
    with torch.no_grad():
        f_l, h_l, _ = m.nets["label"](L)
    sign = torch.where(h_l >= 0, 1, -1).numpy()
    r = {"ep": ep + 1, "lab_code_map": mean_average_precision(sign, sign, L.numpy(), L.numpy()), **stats("lab", f_l, None), **stats("img", features_of("image"), f_l),
         **stats("txt", features_of("text"), f_l)}
    r.update({f"{k}_per_pair": rec[k] / (n * mm) for k in ("image_j1", "text_j1", "image_j2", "text_j2") if k in rec})
    r.update({k: rec[k] for k in ("label_objective", "disc") if k in rec})
    r.update(tr.validate())
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
