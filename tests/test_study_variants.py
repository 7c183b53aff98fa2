"""The study's variants of G as data: the built-in list is read from the package's variants.toml
(the same variants the study ran when they were written in code), and ``adah study
--variants-file`` reads a user's file of the same format, refusing a bad one by file and entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tiny_config
from typer.testing import CliRunner

from adah.cli import app
from adah.config import PRESETS
from adah.data.base import Split
from adah.errors import AdahError
from adah.experiments import study
from adah.experiments.study import (BUILTIN_VARIANTS_FILE, DEFAULT_VARIANTS, VARIANTS, load_variants, run_study,
                                    select_variants, variant_config)

PAPER = PRESETS["paper"]

USER_FILE = '''
# two variants of my own
[erase_30]
preset = "paper"
about = "paper erasing 30% of the positions, G never trained"
[erase_30.overrides]
"attention.keep_fraction" = 0.3
"attention.residual" = 1.0
"train.steps_max" = 0

[text_pool]
about = "attention pooling on the text branch, from the config's own G"
overrides = {"model.attention" = "text", "attention.mask" = "weight"}
'''


def _study_config():
    return tiny_config(**{"data.num_items": 200, "data.num_query": 20, "data.num_train": 100,
                          "train.max_batches_per_epoch": 1})


def _write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the built-in file ---------------------------------------------------------------------------

def test_builtin_file_is_package_data_and_holds_the_variants_written_in_code_before():
    assert BUILTIN_VARIANTS_FILE.name == "variants.toml" and BUILTIN_VARIANTS_FILE.is_file()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"experiments/variants.toml"' in pyproject  # shipped by a pip install
    assert len(VARIANTS) == 52 and list(VARIANTS)[:4] == ["none", "paper", "paper_fixed_g", "zero_warmup"]
    assert list(VARIANTS)[-3:] == ["adah", "attention_pool", "attention_pool_text"]
    assert set(DEFAULT_VARIANTS) <= set(VARIANTS)
    # the entries as study.py wrote them: exactly, key order and value types included
    expected = {
        "none": ({"model.attention": "none"}, "no attention, no adversarial term (the ablation baseline)"),
        "paper": (PAPER, "the paper's G as written: softmax, alpha = 1/N, hard mask, D hashes Z*f"),
        "paper_fixed_g": ({**PAPER, "train.steps_max": 0}, "paper, G never trained: masks fixed at G's random "
                          "initialisation (adversarial terms as a robustness term)"),
        "erase_nothing_image": ({**PAPER, "attention.residual": 1.0, "attention.threshold": 1000.0,
                                 "train.steps_max": 0, "model.attention": "image"}, None),
        "saliency_image_w0": ({**PAPER, "attention.init": "saliency", "attention.temperature": 100.0,
                               "train.steps_max": 0, "model.attention": "image", "attention.rescale": True,
                               "loss.adversarial_weight": 0.0},
                              "saliency_image without the adversarial terms: SCDA's selective pooling alone"),
        "adah": (PRESETS["adah"], None),
        "attention_pool_text": ({**PRESETS["attention_pool"], "model.attention": "text"}, None),
        "soft_zero_full_a25_shared": ({**PAPER, "attention.mask": "soft", "attention.init": "zero",
                                       "attention.objective": "full", "loss.adversarial_weight": 0.25,
                                       "train.g_batches": "shared"}, None),
    }
    for name, (overrides, about) in expected.items():
        got, got_about = VARIANTS[name]
        assert got == overrides and list(got) == list(overrides), name
        assert [type(v) for v in got.values()] == [type(v) for v in overrides.values()], name  # 1000.0, not 1000
        if about is not None:
            assert got_about == about
    for name, (_, about) in VARIANTS.items():
        assert "round" not in about.lower(), name  # the study's rounds belong in its write-up


def test_builtin_variant_config_is_unchanged():
    cfg = _study_config()
    built = variant_config(cfg, "erase_fixed_g_a25", bits=32, seed=2)
    assert (built.model.attention, built.model.bits, built.train.seed) == ("both", 32, 2)
    assert (built.attention.keep_fraction, built.attention.residual, built.train.steps_max) == (0.5, 1.0, 0)
    assert built.loss.adversarial_weight == 0.25 and built.attention.gate == "softmax"


# -- a user's file -------------------------------------------------------------------------------

def test_user_file_adds_variants_and_builds_their_configs(tmp_path):
    path = _write(tmp_path, USER_FILE)
    mine = load_variants(path, builtin=VARIANTS)
    assert list(mine) == ["erase_30", "text_pool"]
    assert mine["erase_30"][0] == {**PAPER, "attention.keep_fraction": 0.3, "attention.residual": 1.0,
                                   "train.steps_max": 0}
    assert mine["text_pool"] == ({"model.attention": "text", "attention.mask": "weight"},
                                 "attention pooling on the text branch, from the config's own G")
    cfg = _study_config()
    # without --variants: the file's variants, none first; with names: built-in and the file's mixed
    variants, known = select_variants(cfg, None, (16, 32), path)
    assert variants == ("none", "erase_30", "text_pool")
    assert select_variants(cfg, ("paper", "erase_30"), (16,), path)[0] == ("none", "paper", "erase_30")
    assert select_variants(cfg, None, (16,))[0] == DEFAULT_VARIANTS
    built = variant_config(cfg, "erase_30", bits=32, seed=1, variants=known)
    assert (built.model.attention, built.model.bits, built.train.seed, built.train.progress) == ("both", 32, 1, False)
    assert (built.attention.keep_fraction, built.attention.residual, built.train.steps_max) == (0.3, 1.0, 0)
    assert built.to_dict() == cfg.override({**PAPER, "attention.keep_fraction": 0.3, "attention.residual": 1.0,
                                            "train.steps_max": 0, "model.bits": 32, "train.seed": 1,
                                            "model.attention": "both", "train.progress": False}).to_dict()
    text = variant_config(cfg, "text_pool", bits=16, seed=0, variants=known)
    assert (text.model.attention, text.attention.mask) == ("text", "weight")
    assert text.attention.keep_fraction == cfg.attention.keep_fraction  # the config's own G otherwise
    with pytest.raises(AdahError, match="unknown study variant 'erase_30'"):
        variant_config(cfg, "erase_30", bits=16, seed=0)  # not built in


def test_run_study_reads_a_finished_run_of_a_user_variant(tmp_path):
    """run_study with the file: the config it builds for the user's variant is the one a finished
    run was keyed by, so the run is read into the table and study.json (nothing trains)."""
    path = _write(tmp_path, USER_FILE)
    cfg, out = _study_config(), tmp_path / "study"
    run_study(cfg, out, seeds=1, bits=(16,), progress=False, finished_only=True, variants_file=path)
    trained = variant_config(cfg, "erase_30", bits=16, seed=0, variants=load_variants(path))
    run = out / "erase_30" / "bits16-seed0"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({
        "variant": "erase_30", "bits": 16, "seed": 0, **study._run_key(trained, Split.load(out / "split.json").digest()),
        "best_epoch": 1, "val_map": 0.5, "test_map": {"i2t": 0.4125, "t2i": 0.6}, "test_map_mean": 0.50625,
        "final": {}, "history": [{"epoch": 1, "val_map": 0.5}]}))
    result = run_study(cfg, out, seeds=1, bits=(16,), progress=False, finished_only=True, variants_file=path)
    assert [(r["variant"], r["test_map"]["i2t"]) for r in result.runs] == [("erase_30", 0.4125)]
    assert result.recommended == "erase_30"
    table = result.table_md.read_text()
    assert "| **erase_30** | 0.4125 ± 0.0000 |" in table and "paper erasing 30% of the positions" in table
    saved = json.loads(result.results_json.read_text())
    assert saved["variants"]["erase_30"]["overrides"]["attention.keep_fraction"] == 0.3
    assert list(saved["variants"]) == ["none", "erase_30", "text_pool"]


def test_json_file_of_the_same_shape(tmp_path):
    path = _write(tmp_path, json.dumps({"half": {"preset": "adah", "about": "adah's G",
                                                 "overrides": {"attention.keep_fraction": 0.5}}}), "mine.json")
    assert load_variants(path) == {"half": ({**PRESETS["adah"], "attention.keep_fraction": 0.5}, "adah's G")}


def test_cli_lists_and_checks_a_variants_file(tmp_path):
    path = _write(tmp_path, USER_FILE)
    runner = CliRunner()
    listed = runner.invoke(app, ["study", "--list", "--variants-file", str(path)])
    assert listed.exit_code == 0, listed.output
    assert "erase_30" in listed.output and "paper erasing 30% of the positions" in listed.output
    assert "erase_fixed_g_image " in listed.output  # the built-in ones too
    bad = _write(tmp_path, '[paper]\nabout = "mine"\n', "bad.toml")
    out = tmp_path / "never"
    refused = runner.invoke(app, ["study", "--variants-file", str(bad), "--out", str(out), "--epochs", "1"])
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert f"{bad}: variant 'paper'" in refused.output and "built-in" in refused.output
    assert not out.exists()  # refused before the output folder is made


# -- bad files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, entry, match", [
    ('[mine]\nabout = "x"\n[mine.overrides]\n"attention.nope" = 1\n', "mine", "unknown config key 'attention.nope'"),
    ('[mine]\nabout = "x"\n[mine.overrides]\n"attention.keep_fraction" = "half"\n', "mine", "keep_fraction"),
    ('[mine]\nabout = "x"\n[mine.overrides]\n"bogus" = 1\n', "mine", "unknown config key 'bogus'"),
    ('[mine]\noverrides = {"attention.noise" = 1.0}\n', "mine", "'about' must be a non-empty string"),
    ('[mine]\nabout = ""\n', "mine", "'about' must be a non-empty string"),
    ('[ok]\nabout = "x"\n[mine]\nabout = "x"\noveride = {}\n', "mine", r"unknown field\(s\) \['overide'\]"),
    ('[mine]\nabout = "x"\npreset = "papr"\n', "mine", "unknown preset 'papr'"),
    ('[mine]\nabout = "x"\noverrides = 3\n', "mine", "'overrides' must be a table"),
    ('mine = "x"\n', "mine", "expected a table"),
    ('[erase_fixed_g]\nabout = "mine"\n', "erase_fixed_g", "built-in variants cannot be redefined"),
    ('["../up"]\nabout = "x"\n', "../up", "letters, digits"),
])
def test_bad_entries_are_refused_naming_file_and_entry(tmp_path, text, entry, match):
    path = _write(tmp_path, text)
    with pytest.raises(AdahError, match=match) as err:
        load_variants(path, builtin=VARIANTS)
    assert str(err.value).startswith(f"{path}: variant {entry!r}: ")


@pytest.mark.parametrize("name, text, match", [
    ("broken.toml", "[mine\nabout = 1\n", "not a readable TOML variants file"),
    ("empty.toml", "# nothing\n", "no variants"),
    ("twice.json", '{"a": {"about": "x"}, "a": {"about": "y"}}', "'a' appears more than once"),
    ("mine.yaml", "a: 1\n", "must be .toml or .json"),
])
def test_bad_files_are_refused_naming_the_file(tmp_path, name, text, match):
    path = _write(tmp_path, text, name)
    with pytest.raises(AdahError, match=match) as err:
        load_variants(path)
    assert str(err.value).startswith(f"{path}: ")
    with pytest.raises(AdahError, match="variants file not found"):
        load_variants(tmp_path / "absent.toml")


def test_a_variant_the_config_cannot_take_is_refused_before_training(tmp_path):
    """Keys and types are checked on reading; values the whole config refuses (validate) when the
    study builds each variant's config, before anything trains, naming the variant and the file."""
    path = _write(tmp_path, '[sideways]\nabout = "x"\n[sideways.overrides]\n"model.attention" = "sideways"\n')
    assert "sideways" in load_variants(path)
    with pytest.raises(AdahError, match=r"study variant 'sideways' \(built-in, and .*mine.toml\) at 16 bits: "
                                        r".*model.attention must be one of"):
        select_variants(_study_config(), None, (16,), path)
    with pytest.raises(AdahError, match="unknown study variant 'nope'"):
        select_variants(_study_config(), ("nope",), (16,), path)
