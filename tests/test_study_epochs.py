"""research/scripts/study_epochs.py: picked epochs, best validation MAP within the first N epochs, run time."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("study_epochs", ROOT / "research" / "scripts" / "study_epochs.py")
se = importlib.util.module_from_spec(spec)
spec.loader.exec_module(se)


def _run(variant, seed, vals):
    best = max(range(len(vals)), key=lambda i: vals[i])
    return {"variant": variant, "bits": 32, "seed": seed, "best_epoch": best + 1, "val_map": vals[best],
            "history": [{"epoch": i + 1, "val_map": v} for i, v in enumerate(vals)]}


def test_picked_epochs_and_best_within_the_first_epochs(tmp_path, capsys):
    study = tmp_path / "study9-x"
    study.mkdir()
    runs = [_run("none", 0, [0.5, 0.6, 0.9]), _run("none", 1, [0.7, 0.4, 0.8]),
            _run("g", 0, [0.6, 0.3, 0.2])]
    (study / "study.json").write_text(json.dumps({"runs": runs}))
    metrics = study / "none" / "bits32-seed0" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("".join(json.dumps({"epoch": e, "seconds": 2.5}) + "\n" for e in (1, 2, 3)))
    se.main([str(study), "--within", "2"])
    rows = capsys.readouterr().out.splitlines()[2:]
    # none: picked epochs 3 and 3, mean best 0.85, best within epochs 1-2: (0.6 + 0.7) / 2, 7.5 s (one run has metrics)
    assert rows == ["| study9-x | none | 3, 3 | 0.8500 | 0.6500 | 8 |", "| study9-x | g | 1 | 0.6000 | 0.6000 | - |"]


def test_a_folder_without_study_json_is_refused_before_any_output(tmp_path, capsys):
    with pytest.raises(SystemExit, match="study.json not found"):
        se.main([str(tmp_path)])
    assert capsys.readouterr().out == ""
