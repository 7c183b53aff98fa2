"""Nothing silently wrong, nothing lost, in an index folder (issue 29, cases 3, 4, 11, 14):
one writer lock for build / add / remove / copy taken before anything is read; item ids unique
by construction and checked on every path; an index folder never deletes what it did not write;
the multihash backend refuses code lengths it cannot serve. Uses an untrained tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from adah.cli import app
from adah.errors import AdahError
from adah.index import Index, build_index, store
from adah.index.update import add_items, copy_index, remove_items
from adah.utils.locks import LockBusy

from helpers import make_folder

HERE = Path(__file__).parent
SRC = HERE.parent / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


def _ids(folder: Path) -> list[str]:
    with Index.load(folder, model=None) as index:
        return [index.item(r)["id"] for r in range(len(index))]


# --------------------------------------------------------------------------- case 3: one lock
_PAUSED_ADD = """
import sys, time
from pathlib import Path
import adah.index.update as update
real = update.load_collection
def paused(*args, **kwargs):  # the old version is open: wait until the parent says go
    print("read", flush=True)
    while not Path(sys.argv[3]).exists():
        time.sleep(0.05)
    return real(*args, **kwargs)
update.load_collection = paused
update.add_items(sys.argv[1], sys.argv[2], progress=False)
print("added", flush=True)
"""


@pytest.mark.slow
def test_a_build_cannot_slip_in_while_an_add_holds_the_old_version(base_index, ckpt, tmp_path):
    """Issue 29 case 3: `index add` read the old version, then `index build --force` replaced
    it, then the add wrote old + new items: the build was silently undone. Now the add holds
    the one writer lock from before it reads, so the build is refused while it runs."""
    new_items, rebuilt, go = make_folder(tmp_path / "new"), make_folder(tmp_path / "other", n=4), tmp_path / "go"
    before = store.read_manifest(base_index)["sha256"]
    p = subprocess.Popen([sys.executable, "-c", _PAUSED_ADD, str(base_index), str(new_items), str(go)], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "read", p.stderr.read()[-2000:]
        errors = []
        for attempt in (lambda: build_index(ckpt, base_index, data=rebuilt, force=True, progress=False),
                        lambda: remove_items(base_index, ["0"])):
            try:
                attempt()
                errors.append(None)
            except AdahError as exc:
                errors.append(exc)
    finally:
        go.touch()
        out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and out.strip().endswith("added"), err[-2000:]
    # whatever ran, the index must hold every version that reported success: never a lost write
    assert errors[0] is not None, "the build succeeded and the add then silently undid it"
    assert all(isinstance(e, LockBusy) and "in use by another adah process" in str(e) for e in errors), errors
    ids = _ids(base_index)
    assert len(ids) == 96 and ids[-6:] == [f"x{i}" for i in range(6)]
    assert store.read_manifest(base_index)["updates"][-1]["parent"] == before


@pytest.mark.slow
def test_every_writer_takes_the_same_lock(base_index, ckpt, tmp_path):
    """build, add, remove and copy (its source and its destination) are all refused while
    another process holds the index's writer lock, and change nothing."""
    from adah.utils.locks import exclusive, lock_file_beside

    before = store.read_manifest(base_index)["sha256"]
    folder = make_folder(tmp_path / "new")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom adah.index import store\n"
                               "with store.writer_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
                               str(base_index)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        attempts = [lambda: build_index(ckpt, base_index, force=True, progress=False),
                    lambda: add_items(base_index, folder, progress=False),
                    lambda: remove_items(base_index, ["3"]),
                    lambda: copy_index(base_index, tmp_path / "copy"),
                    lambda: copy_index(tmp_path / "copy0", base_index, force=True)]
        build_index(ckpt, tmp_path / "copy0", progress=False)
        for attempt in attempts:
            with pytest.raises(LockBusy, match=f"PID {holder.pid}"):
                attempt()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert store.read_manifest(base_index)["sha256"] == before and not (tmp_path / "copy").exists()
    with exclusive(lock_file_beside(base_index), "x"):  # the same file as before (old scripts' view)
        with pytest.raises(LockBusy):
            remove_items(base_index, ["3"])


# --------------------------------------------------------------------------- case 4: ids
def _jsonl_folder(root: Path, rows: list[dict]) -> Path:
    from PIL import Image

    (root / "photos").mkdir(parents=True)
    for i, row in enumerate(rows):
        Image.new("RGB", (40, 40), (30 * i, 90, 200 - 30 * i)).save(root / "photos" / f"p{i}.png")
        row.update(image=f"photos/p{i}.png", text=f"red_circle picture {i}", labels=["thing"])
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_generated_ids_never_collide_with_given_ones(ckpt, tmp_path):
    """Issue 29 case 4: row 1 with id "2" and row 2 without one made two items with id 2, and
    `index remove --ids 2` removed both."""
    folder = _jsonl_folder(tmp_path / "mine", [{"id": "2"}, {}, {"id": "a,b"}])
    out = tmp_path / "idx"
    build_index(ckpt, out, data=folder, progress=False)
    assert _ids(out) == ["2", "2-2", "a,b"]
    r = CliRunner().invoke(app, ["index", "remove", "--index", str(out), "--ids", "2"])
    assert r.exit_code == 0 and "removed 1 items" in r.stdout, r.output
    assert _ids(out) == ["2-2", "a,b"]
    # an id holding the separator is removed through --ids-file (one id per line)
    (tmp_path / "ids.txt").write_text("a,b\n\n")
    r = CliRunner().invoke(app, ["index", "remove", "--index", str(out), "--ids-file", str(tmp_path / "ids.txt")])
    assert r.exit_code == 0 and "removed 1 items" in r.stdout, r.output
    assert _ids(out) == ["2-2"]
    # adding items without ids to an index: their generated ids avoid the index's own
    add_items(out, _jsonl_folder(tmp_path / "more", [{}, {}]), progress=False)
    assert _ids(out) == ["2-2", "1", "2"]
    add_items(out, _jsonl_folder(tmp_path / "again", [{}, {"id": "7"}]), progress=False)
    assert _ids(out) == ["2-2", "1", "2", "1-2", "7"]


@pytest.mark.parametrize("rows, needle", [
    ([{"id": "p"}, {"id": None}], "items.jsonl: line 2: field 'id' is null"),
    ([{"id": "p"}, {"id": " "}], "items.jsonl: line 2: field 'id'"),
    ([{"id": ["p"]}], "items.jsonl: line 1: field 'id'"),
    ([{"id": "p"}, {}, {"id": "p"}], "'p' on lines 1, 3"),
])
def test_bad_ids_are_refused_naming_file_and_line(ckpt, tmp_path, rows, needle):
    folder = _jsonl_folder(tmp_path / "mine", rows)
    r = CliRunner().invoke(app, ["index", "build", "--checkpoint", str(ckpt), "--data", str(folder), "--out",
                                 str(tmp_path / "idx"), "--quiet"])
    assert r.exit_code == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.output
    assert not (tmp_path / "idx").exists()


def test_ids_are_checked_where_every_index_is_written(tmp_path):
    from adah.index import write_index

    codes = np.zeros((2, 1), dtype=np.uint8)
    for records, needle in (([{"id": "a"}, {"id": "a"}], "rows 0 and 1 both have id 'a'"),
                            ([{"id": "a"}, {"id": None}], "row 1: 'id' must be a non-empty string")):
        with pytest.raises(AdahError, match=needle):
            write_index(tmp_path / "idx", [({"image": codes}, records)], bits=8, modalities=("image",),
                        model={"fingerprint": "f"}, collection={"name": "x"})
        assert not (tmp_path / "idx").exists()


def test_remove_takes_exactly_one_of_ids_and_ids_file(base_index, tmp_path):
    runner = CliRunner()
    (tmp_path / "empty.txt").write_text("\n \n")
    for args, needle in (([], "exactly one of --ids and --ids-file"),
                         (["--ids", "1", "--ids-file", str(tmp_path / "empty.txt")], "exactly one of"),
                         (["--ids-file", str(tmp_path / "empty.txt")], "no ids in it"),
                         (["--ids-file", str(tmp_path / "missing.txt")], "cannot read it")):
        r = runner.invoke(app, ["index", "remove", "--index", str(base_index), *args])
        assert r.exit_code == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.output


# --------------------------------------------------------------------------- case 11: foreign content
def test_an_index_folder_never_deletes_what_adah_did_not_write(base_index, ckpt, tmp_path):
    """Issue 29 case 11: `index copy --index A --out A/sub` was accepted, and the next
    `index remove --index A` deleted A/sub (a new version replaces the whole folder)."""
    runner = CliRunner()
    r = runner.invoke(app, ["index", "copy", "--index", str(base_index), "--out", str(base_index / "sub")])
    assert r.exit_code == 2 and "outside its source" in r.stderr and r.stderr.count("\n") == 1, r.output
    assert not (base_index / "sub").exists()
    r = runner.invoke(app, ["index", "build", "--checkpoint", str(ckpt), "--out", str(base_index / "sub"), "--quiet"])
    assert r.exit_code == 2 and "inside the index folder" in r.stderr, r.output
    assert not (base_index / "sub").exists()
    # something put there by hand is never deleted: every writer refuses and changes nothing
    (base_index / "notes.txt").write_text("mine")
    (base_index / "sub").mkdir()
    before = store.read_manifest(base_index)["sha256"]
    for args in (["index", "remove", "--index", str(base_index), "--ids", "3"],
                 ["index", "add", "--index", str(base_index), "--data", str(make_folder(tmp_path / "new"))],
                 ["index", "build", "--checkpoint", str(ckpt), "--out", str(base_index), "--force", "--quiet"],
                 ["index", "copy", "--index", str(tmp_path / "other"), "--out", str(base_index), "--force"]):
        if args[1] == "copy":
            build_index(ckpt, tmp_path / "other", progress=False)
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "notes.txt, sub, which adah did not write" in r.stderr, (args, r.output)
    assert (base_index / "notes.txt").read_text() == "mine" and (base_index / "sub").is_dir()
    assert store.read_manifest(base_index)["sha256"] == before
    (base_index / "notes.txt").unlink()
    (base_index / "sub").rmdir()
    assert remove_items(base_index, ["3"]).count == 89


# --------------------------------------------------------------------------- case 14
@pytest.mark.parametrize("bits", [7, 1000])
def test_multihash_never_answers_with_no_hits(bits):
    """Issue 29 case 14: the multihash backend returned 0 hits (exit 0) on 7-bit and 1000-bit
    indexes: no item lay in any probed bucket. Such a query is now answered exactly."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    db = rng.choice(np.array([-1, 1], np.int8), size=(90, bits))
    db[:, : min(bits, 7)] = -1  # every item far from the query in its first bits
    index = Index.from_codes(bits=bits, image=db, packed=False, backend="multihash")
    query = rng.choice(np.array([-1, 1], np.int8), size=(1, bits))
    query[:, : min(bits, 7)] = 1
    dist, rows = index.search_codes(query, target="image", k=5, packed=False)
    exact = Index.from_codes(bits=bits, image=db, packed=False, backend="numpy")
    want_d, want_r = exact.search_codes(query, target="image", k=5, packed=False)
    assert (rows >= 0).all() and rows.shape == (1, 5)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(rows, want_r)
    assert index.backends["image"].fallbacks == 1


def test_add_rows_query_uses_the_split_beside_a_folder_models_checkpoint(ckpt, tmp_path):
    """Issue 29 case 14: `index add --rows query` said split.json was missing when it was there
    (beside the checkpoint of a model trained on that very folder)."""
    import dataclasses

    from adah.training.checkpoint import load_model

    folder = make_folder(tmp_path / "photos", n=8)
    model, config, payload = load_model(ckpt, "cpu")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, name="folder",
                                                                  options={"path": str(folder)}))
    own = tmp_path / "fit" / "best.pt"
    own.parent.mkdir()
    from adah.training.checkpoint import save_checkpoint

    save_checkpoint(own, model=model, config=config, epoch=0,
                    text_vocabulary=payload["text_vocabulary"])
    (own.parent / "split.json").write_text(json.dumps({"query": [1, 6], "retrieval": [0, 2, 3, 4, 5, 7],
                                                       "train": [0, 2, 3, 4], "val": [5, 7]}))
    build_index(own, tmp_path / "idx", data=folder, rows="retrieval", progress=False)
    r = CliRunner().invoke(app, ["index", "add", "--index", str(tmp_path / "idx"), "--data", str(folder),
                                 "--rows", "query", "--quiet"])
    assert r.exit_code == 0, r.output
    assert _ids(tmp_path / "idx") == ["x0", "x2", "x3", "x4", "x5", "x7", "x1", "x6"]
    # another folder: the message says what to pass
    r = CliRunner().invoke(app, ["index", "add", "--index", str(tmp_path / "idx"), "--data",
                                 str(make_folder(tmp_path / "else")), "--rows", "query", "--quiet"])
    assert r.exit_code == 2 and "pass --split FILE" in r.stderr, r.output


# --------------------------------------------------------------------------- under load
_WRITER = """
import json, random, sys, time
from adah.errors import AdahError
from adah.index import Index, IndexFormatError, build_index
from adah.index.update import add_items, remove_items
from adah.utils.locks import LockBusy
index, ckpt, plan, log, seed = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rng = random.Random(seed)

def pick_id():  # read without the lock, as a user would: a version swapped in meanwhile is read again
    while True:
        try:
            with Index.load(index, model=None) as current:
                return current.item(rng.randrange(len(current)))["id"]
        except (IndexFormatError, OSError):
            time.sleep(0.01)

for op, arg in plan:
    give_up = time.monotonic() + 120  # a busy index is retried (bounded); anything else fails
    while True:
        if time.monotonic() > give_up:
            sys.exit(f"{op}: the index stayed busy for 120 s")
        try:
            if op == "build":
                m = build_index(ckpt, index, data=arg, force=True, progress=False).manifest
            elif op == "add":
                m = add_items(index, arg, progress=False).manifest
            else:
                m = remove_items(index, [pick_id()]).manifest
            entry = {"op": op, "ok": True, "sha": m["sha256"], "replaces": m.get("replaces"),
                     "parent": (m.get("updates") or [{}])[-1].get("parent") if op != "build" else None}
        except LockBusy:
            time.sleep(rng.uniform(0.02, 0.2))
            continue
        except AdahError as exc:  # the id picked was removed meanwhile: pick another
            if "not in the index" not in str(exc):
                raise
            time.sleep(rng.uniform(0.02, 0.2))
            continue
        with open(log, "a") as f:
            f.write(json.dumps(entry) + "\\n")
        break
"""


def _logged(logs: list[Path]) -> list[dict]:
    return [json.loads(line) for log in logs if log.exists() for line in log.read_text().splitlines()]


def _with_ids(folder: Path, prefix: str) -> Path:
    (folder / "items.jsonl").write_text((folder / "items.jsonl").read_text().replace('"x', f'"{prefix}'))
    return folder


@pytest.mark.slow
def test_index_under_concurrent_writers_and_queries(ckpt, base_index, tmp_path):
    """Issue 29: three processes build, add and remove on one index (bounded: three operations
    each) while the service answers queries and thumbnails. After every query round the folder
    holds exactly one of the versions some writer reported (its manifest sha256), loadable and
    verified; the versions form one chain (each replaced at most once, each update made from the
    version it replaced); the service never answers 5xx."""
    from fastapi.testclient import TestClient

    from adah.serve import create_app

    writers, logs, procs = 3, [tmp_path / f"log{i}" for i in range(3)], []
    first = store.read_manifest(base_index)["sha256"]
    for w in range(writers):
        plan = [["build", str(_with_ids(make_folder(tmp_path / f"b{w}", n=4), f"b{w}-"))],
                ["add", str(_with_ids(make_folder(tmp_path / f"a{w}", n=3), f"a{w}-"))], ["remove", None]]
        plan = plan[w:] + plan[:w]  # each writer starts with another operation
        procs.append(subprocess.Popen([sys.executable, "-c", _WRITER, str(base_index), str(ckpt), json.dumps(plan),
                                       str(logs[w]), str(w)], env=ENV, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    statuses, seen, deadline = [], {first}, time.monotonic() + 400
    with Index.load(base_index) as index, TestClient(create_app(index, watch_seconds=0.0)) as client:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            r = client.post("/api/search/text", json={"text": "red_circle sunset", "k": 5})
            statuses.append(r.status_code)
            for hit in r.json().get("hits", [])[:1] if r.status_code == 200 else []:
                if hit.get("thumbnail"):
                    statuses.append(client.get(hit["thumbnail"]).status_code)
            statuses += [client.get("/api/health").status_code, client.get("/api/info").status_code]
            on_disk = store.read_manifest(base_index)["sha256"]
            wait = time.monotonic() + 30  # a writer logs its version just after swapping it in
            while on_disk not in seen | {e["sha"] for e in _logged(logs)} and time.monotonic() < wait:
                time.sleep(0.05)
            seen |= {e["sha"] for e in _logged(logs)}
            assert on_disk in seen, "the folder holds a version no writer reported"
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err[-3000:]
    assert statuses and max(statuses) < 500, sorted(set(statuses))
    done = _logged(logs)
    assert len(done) == 3 * writers and all(e["ok"] for e in done)
    replaced = [e["replaces"] for e in done]
    assert len(set(replaced)) == len(replaced) and first in replaced  # one chain from the first version
    for e in done:
        if e["op"] != "build":
            assert e["parent"] == e["replaces"], "an update was made from a version that was not current"
    last = store.read_manifest(base_index)["sha256"]
    assert last in {e["sha"] for e in done} and last not in replaced
    with Index.load(base_index) as final:  # every checksum verified
        ids = [final.item(r)["id"] for r in range(len(final))]
        assert len(ids) == len(set(ids)) and final.search_text("red_circle", k=3).hits
