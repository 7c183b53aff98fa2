"""The CLI vocabulary (docs/cli.md): every renamed option works under its new name and, for one
release, under its old one with one deprecation line on stderr; the old names are hidden from
help; ``-h``, ``--version``, ``-o``, ``-q`` and ``--device auto`` everywhere they apply.

Commands are parsed, not run (click's ``make_context``): fast, and exactly what a rename touches."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from adah import __version__
from adah.cli import app
from adah.cli.common import DEPRECATED_OPTIONS

ROOT = typer.main.get_command(app)


def command(path: str) -> click.Command:
    cmd = ROOT
    for name in path.split():
        cmd = cmd.commands[name]
    return cmd


def every_command(group: click.Group = ROOT, prefix: str = ""):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from every_command(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def parse(path: str, args: list[str]) -> dict:
    return command(path).make_context(path, list(args)).params


# command, the other arguments it needs, old spelling, new spelling, its value, the parameter, expected
RENAMES = [
    ("index build", ["--out", "o"], "--model", "--checkpoint", "m.pt", "checkpoint", "m.pt"),
    ("index build", ["--checkpoint", "m.pt", "--out", "o"], "--force", "--overwrite", None, "overwrite", True),
    ("index add", ["--index", "i", "--data", "d"], "--model", "--checkpoint", "m.pt", "checkpoint", "m.pt"),
    ("index copy", ["--index", "i", "--out", "o"], "--force", "--overwrite", None, "overwrite", True),
    ("search", ["--index", "i", "--text", "t"], "--model", "--checkpoint", "m.pt", "checkpoint", "m.pt"),
    ("search", ["--index", "i", "--text", "t"], "--k", "--top-k", "3", "k", 3),
    ("fit", ["photos"], "--force", "--overwrite", None, "overwrite", True),
    ("benchmark", [], "--dataset", "--data", "scenes", "dataset", "scenes"),
    ("benchmark", [], "--seeds", "--num-seeds", "2", "seeds", 2),
    ("benchmark", [], "--topk", "--top-k", "50", "topk", 50),
    ("eval", ["--checkpoint", "m.pt"], "--topk", "--top-k", "50", "topk", 50),
    ("study", [], "--seeds", "--num-seeds", "2", "seeds", 2),
]
IDS = [f"{c}:{old}" for c, _, old, *_ in RENAMES]


def _value(path: str, param: str, got):
    return str(got) if isinstance(got, Path) else got


@pytest.mark.parametrize("path, base, old, new, value, param, expected", RENAMES, ids=IDS)
def test_old_spelling_works_and_warns_once(capsys, path, base, old, new, value, param, expected):
    given = [old] if value is None else [old, value]
    params = parse(path, [*base, *given])
    assert _value(path, param, params[param]) == expected
    assert capsys.readouterr().err.splitlines() == [f"{old} is deprecated, use {new}"]
    if value is not None:  # the --old=value form too
        params = parse(path, [*base, f"{old}={value}"])
        assert _value(path, param, params[param]) == expected
        assert capsys.readouterr().err.splitlines() == [f"{old} is deprecated, use {new}"]


@pytest.mark.parametrize("path, base, old, new, value, param, expected", RENAMES, ids=IDS)
def test_new_spelling_works_silently(capsys, path, base, old, new, value, param, expected):
    params = parse(path, [*base, *([new] if value is None else [new, value])])
    assert _value(path, param, params[param]) == expected
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("path, base, old, new, value, param, expected", RENAMES, ids=IDS)
def test_old_spelling_hidden_from_help(path, base, old, new, value, param, expected):
    text = CliRunner().invoke(app, [*path.split(), "--help"]).output
    assert new in text and f"{old} " not in text and f"{old}\n" not in text


def test_old_spelling_only_where_the_new_one_exists():
    """``--model`` means nothing to ``train`` (no --checkpoint there): refused as before."""
    res = CliRunner().invoke(app, ["train", "--model", "x"])
    assert res.exit_code == 2 and "No such option: --model" in res.output
    assert set(DEPRECATED_OPTIONS.values()) <= {o for _, c in every_command() for p in c.params for o in p.opts}


def test_short_help_and_version():
    runner = CliRunner()
    assert runner.invoke(app, ["-h"]).output == runner.invoke(app, ["--help"]).output
    for path, _ in every_command():
        res = runner.invoke(app, [*path.split(), "-h"])
        assert res.exit_code == 0 and "Usage:" in res.output, (path, res.output)
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"adah {__version__}"


@pytest.mark.parametrize("path, cmd", list(every_command()), ids=[p for p, _ in every_command()])
def test_shared_options_are_spelled_alike(path, cmd):
    opts = {p.name: p for p in cmd.params if isinstance(p, click.Option)}
    if "device" in opts:
        assert opts["device"].default in ("auto", None), path  # None: the config's, whose default is auto
    if "out" in opts:
        assert {"-o", "--out"} <= set(opts["out"].opts), path
    if "quiet" in opts:
        assert {"-q", "--quiet"} <= set(opts["quiet"].opts), path
    if "k" in opts or "topk" in opts:
        assert {"-k", "--top-k"} <= set((opts.get("k") or opts["topk"]).opts), path
    names = {o for p in cmd.params for o in p.opts}
    assert not names & set(DEPRECATED_OPTIONS), path  # no command declares an old spelling itself


def test_fit_text_encoder_help_names_the_extra():
    assert "pip install 'adah[text]'" in " ".join(CliRunner().invoke(app, ["fit", "-h"]).output.split())


def test_demo_help_counts_the_models_it_trains():
    from adah.recipes.demo import VARIANTS

    text = " ".join(CliRunner().invoke(app, ["demo", "-h"]).output.split())
    assert len(VARIANTS) == 3 and "train three models" in text
