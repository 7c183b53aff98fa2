"""Milvus Lite files are touched under adah's own lock, and ``--uri`` writes only into a Milvus
database (issue 29, cases 9 and 10; both fail on the main of 6f62c28).

Case 9: milvus-lite's own lock (``.NAME.lock``) is deleted by the ``stop()`` of a process that
failed to open the file, so a second try opened the file beside its holder (``adah serve``) and
the server stayed on the old version. Now every adah process holds ``.NAME.adah.lock`` first:
a second one is refused with one line, every time. Case 10: ``--uri`` at another program's
SQLite file (or any non-Milvus file) is refused before anything is written into it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import make_checkpoint, make_folder
from typer.testing import CliRunner

from adah.cli import app
from adah.index import milvus as milvus_module

pytestmark = pytest.mark.skipif(not milvus_module.available(), reason="pymilvus / milvus-lite not installed: pip "
                                "install 'adah[milvus]' (make test installs it)")

SRC = Path(__file__).resolve().parents[1] / "src"
BUSY = "is in use by another adah process"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


def _one_line_error(args: list[str], needle: str) -> str:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and r.stderr.count("\n") == 1, (needle, r.stderr)
    return r.stderr


# --------------------------------------------------------------------------- case 10: --uri
def test_uri_at_another_programs_file_is_refused_and_left_untouched(ckpt, tmp_path):
    other = tmp_path / "otherapp.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users (name) VALUES ('ada')")
    text = tmp_path / "notes.db"
    text.write_text("my notes\n")
    folder = tmp_path / "folder.db"
    folder.mkdir()
    before = {p: p.read_bytes() for p in (other, text)}
    for uri, needle in ((other, "not a Milvus Lite database"), (text, "not a Milvus Lite database"),
                        (folder, "a folder, not a Milvus Lite file")):
        _one_line_error(["index", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "idx"), "--quiet",
                         "--backend", "milvus", "--uri", str(uri)], needle)
        assert not (tmp_path / "idx").exists()
    assert {p: p.read_bytes() for p in (other, text)} == before  # not one byte written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.db", "notes.db", "otherapp.db"]  # no lock left
    with sqlite3.connect(other) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["users"]


@pytest.mark.slow
def test_a_new_file_and_a_milvus_database_are_accepted(ckpt, tmp_path):
    """The same check lets through what it must: a new (or empty) file, then that file again
    once it is a Milvus Lite database."""
    lite = tmp_path / "fresh.db"
    lite.touch()  # empty: nothing to lose
    r = CliRunner().invoke(app, ["index", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "a"), "--quiet",
                                 "--backend", "milvus", "--uri", str(lite), "--collection", "adah_a"])
    assert r.exit_code == 0, r.output
    milvus_module.check_lite_file(lite)  # a Milvus Lite database now: accepted as it is
    r = CliRunner().invoke(app, ["index", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b"), "--quiet",
                                 "--backend", "milvus", "--uri", str(lite), "--collection", "adah_b"])
    assert r.exit_code == 0, r.output
    names = set(milvus_module.connect(str(lite)).list_collections())
    assert {n.rsplit("_", 3)[0] for n in names} == {"adah_a", "adah_b"}


# --------------------------------------------------------------------------- case 9: one process per Lite file
_HOLDER = textwrap.dedent("""
    import sys, time
    from adah.index import milvus
    milvus.connect(milvus.resolve_uri(sys.argv[1]), create=True)
    print("holding", flush=True)
    time.sleep(120)
""")


@pytest.mark.slow
def test_a_lite_file_held_by_another_process_is_refused_every_time(ckpt, tmp_path):
    """On main the first try failed ("Open local milvus failed") and deleted milvus-lite's lock;
    the second try then opened the file beside its holder."""
    lite = tmp_path / "held.db"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lite)], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()[-2000:]
        for attempt in range(3):
            err = _one_line_error(["index", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "idx"), "--quiet",
                                   "--backend", "milvus", "--uri", str(lite)], BUSY)
            assert f"PID {holder.pid}" in err and "Milvus server" in err, (attempt, err)
            assert not (tmp_path / "idx").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # the holder is gone (even by SIGKILL): the file is free again
    r = CliRunner().invoke(app, ["index", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "idx"), "--quiet",
                                 "--backend", "milvus", "--uri", str(lite)])
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_index_add_while_adah_serve_holds_the_lite_file(ckpt, tmp_path):
    """The reproduction of case 9: `adah serve` over an index on Milvus Lite, `adah index add`
    run twice from other processes: refused both times with one line, the index unchanged, and
    the server still reloads (no 409) and answers; once it stops, the same add succeeds."""
    import httpx2
    from serve_support import Server

    out, lite = tmp_path / "idx", tmp_path / "m1.db"
    r = subprocess.run([sys.executable, "-m", "adah", "index", "build", "--checkpoint", str(ckpt), "--out", str(out),
                        "--quiet", "--backend", "milvus", "--uri", str(lite)], env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = (out / "index.json").read_text()
    new = make_folder(tmp_path / "new")
    add = [sys.executable, "-m", "adah", "index", "add", "--index", str(out), "--data", str(new)]
    srv = Server(out)
    try:
        for _ in range(2):
            r = subprocess.run(add, env=_env(), capture_output=True, text=True, timeout=300)
            assert r.returncode == 2 and BUSY in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
            assert (out / "index.json").read_text() == manifest
        reload = httpx2.post(f"{srv.url}/api/reload", timeout=30)
        assert reload.status_code == 200 and reload.json()["count"] == 90, reload.text
        hits = httpx2.post(f"{srv.url}/api/search/text", json={"text": "red_circle", "k": 5}, timeout=30).json()
        assert len(hits["hits"]) == 5
    finally:
        srv.stop()
    r = subprocess.run(add, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "index.json").read_text())["count"] == 96
