"""``torchrun --nproc_per_node N -m adah index build``: the collection's batches shared out over
the processes.

Each process encodes a contiguous share of the batches (the same fixed batches a single process
encodes, so every code is the one a single process computes) and writes it to a part file in a
hidden folder beside the index, atomically; rank 0 then streams the parts, in row order, into
:func:`adah.index.build.write_index`, which writes the index exactly as a single-process build
does (byte-identical files but the manifest's creation time). A part that is there already (a
run killed after writing it) is not computed again: a rerun continues; the folder is removed
once the index is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from adah.index import store


def shard_folder(out: Path, fingerprint: str, source: str, rows: np.ndarray, modalities: tuple[str, ...],
                 batch_size: int) -> Path:
    key = hashlib.sha256(store.canonical_json({"fingerprint": fingerprint, "source": source,
                                               "modalities": list(modalities), "batch_size": batch_size}))
    key.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return out.parent / f".{out.name}.shards-{key.hexdigest()[:16]}"


def _part_path(folder: Path, rank: int, world: int) -> Path:
    return folder / f"part-{rank}-of-{world}.npz"


def _write_part(path: Path, batches) -> None:
    codes: dict[str, list[np.ndarray]] = {}
    records: list[dict] = []
    for batch_codes, batch_records in batches:
        for m, c in batch_codes.items():
            codes.setdefault(m, []).append(c)
        records.extend(batch_records)
    arrays = {f"codes_{m}": np.concatenate(c) for m, c in codes.items()}
    arrays["records"] = np.frombuffer(json.dumps(records, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_part(path: Path, modalities: tuple[str, ...]) -> tuple[dict[str, np.ndarray], list[dict]]:
    with np.load(path) as z:
        codes = {m: z[f"codes_{m}"] for m in modalities if f"codes_{m}" in z.files}
        records = json.loads(z["records"].tobytes().decode("utf-8"))
    return codes, records


def sharded_batches(ctx, out: Path, fingerprint: str, coll, modalities: tuple[str, ...], encode,
                    batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], list[dict]]] | None:
    """Encode this process's share into its part file (``encode(collection)`` gives the batches
    of a collection, :func:`adah.index.build.encode_batches`); wait for every process; on rank
    0 return the batches of all parts in row order, elsewhere None."""
    import dataclasses

    folder = shard_folder(out, fingerprint, coll.source, coll.rows, modalities, batch_size)
    if ctx.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    num_batches = -(-len(coll.rows) // batch_size)
    share = np.array_split(np.arange(num_batches), ctx.world_size)[ctx.rank]
    part = _part_path(folder, ctx.rank, ctx.world_size)
    if not part.is_file():
        lo = int(share[0]) * batch_size if len(share) else 0
        hi = min(len(coll.rows), (int(share[-1]) + 1) * batch_size) if len(share) else 0
        _write_part(part, encode(dataclasses.replace(coll, rows=coll.rows[lo:hi])) if hi > lo else [])
    ctx.barrier()
    if not ctx.is_main:
        return None

    def batches():
        for rank in range(ctx.world_size):
            codes, records = _read_part(_part_path(folder, rank, ctx.world_size), modalities)
            if records:
                yield codes, records

    return batches()


def remove_shards(out: Path, fingerprint: str, coll, modalities: tuple[str, ...], batch_size: int) -> None:
    shutil.rmtree(shard_folder(out, fingerprint, coll.source, coll.rows, modalities, batch_size), ignore_errors=True)
