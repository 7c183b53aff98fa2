"""``adah index build|info`` and ``adah search`` (registered on :data:`adah.cli.app`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from adah.cli.common import DEVICE_HELP, Typer, _friendly_errors, _parse_sets, app
from adah.errors import AdahError
from adah.utils.fileio import check_output_folder

index_app = Typer(help="Build and inspect binary-code indexes of a collection.")


@index_app.command("build")
@_friendly_errors
def build_cmd(
    checkpoint: Path = typer.Option(..., help="A checkpoint written by adah train (best.pt)."),
    out: Path = typer.Option(..., "-o", "--out", help="Index folder to write (atomically; see --overwrite)."),
    data: Optional[str] = typer.Option(None, help="What to index: a folder or list file in the folder format (e.g. "
                                       "../shared/data/coco_mini), or a dataset name; default: the model's dataset."),
    rows: str = typer.Option("all", help="all | query | retrieval | train | val (a part of the split)."),
    split: Optional[Path] = typer.Option(None, help="Split JSON for --rows (default: split.json beside the model)."),
    modalities: str = typer.Option("", help="image,text | image | text (default: every one available)."),
    batch_size: int = typer.Option(256, min=1, help="Items encoded per batch (bounds memory)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    set_: list[str] = typer.Option([], "--set", help="Data config values for a dataset name, e.g. "
                                   "--set data.num_items=500 (repeatable)."),
    overwrite: bool = typer.Option(False, help="Replace an existing index in OUT."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar."),
    backend: str = typer.Option("local", help="local (codes searched in-process: faiss / numpy) | milvus (codes "
                                "also in Milvus collections, searched there)."),
    uri: Optional[str] = typer.Option(None, help="milvus: a Milvus Lite file (runs/index.db) or http://HOST:19530 "
                                      "(default $ADAH_MILVUS_URI); credentials only in $ADAH_MILVUS_TOKEN."),
    collection: Optional[str] = typer.Option(None, help="milvus: base name of the collections, one per index "
                                             "(default adah_<OUT folder name>_<hash of its path>)."),
    index_type: str = typer.Option("BIN_FLAT", help="milvus: BIN_FLAT (exact) | BIN_IVF_FLAT (approximate; a "
                                   "Milvus server only)."),
    nlist: int = typer.Option(1024, min=1, help="milvus BIN_IVF_FLAT: number of clusters."),
) -> None:
    """Encode a collection into bit-packed codes plus metadata (ids, paths, captions, labels)."""
    from adah.index import build_index

    check_output_folder(out)
    mods = tuple(m.strip() for m in modalities.split(",") if m.strip()) or None
    options = dict(data=data, rows=rows, split=split, modalities=mods, overrides=_parse_sets(set_) or None,
                   batch_size=batch_size, device=device, force=overwrite, progress=not quiet)
    if backend == "milvus":
        from adah.index.milvus import build_on_milvus

        result = build_on_milvus(checkpoint, out, uri=uri, name=collection, index_type=index_type, nlist=nlist, **options)
    elif backend == "local":
        if uri is not None or collection is not None:
            raise AdahError("--uri and --collection are for --backend milvus")
        result = build_index(checkpoint, out, **options)
    else:
        raise AdahError(f"--backend must be local or milvus, got {backend!r}")
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return
    typer.echo(f"indexed {result.count:,} items ({', '.join(result.modalities)} codes, {result.bits} bits) in "
               f"{result.seconds:.1f}s; model fingerprint {result.fingerprint}")
    typer.echo(f"wrote {result.path}")


@index_app.command("info")
@_friendly_errors
def info_cmd(
    index: Path = typer.Option(..., help="An index folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
) -> None:
    """Check an index (format version, checksums of every file) and describe it."""
    from adah.index import Index
    from adah.index.build import describe

    with Index.load(index, model=None) as loaded:  # reads and verifies every file
        manifest, on_milvus = loaded.manifest, loaded.backend_name == "milvus"
    ok = ("ok: the metadata checksums match and the Milvus collections match the manifest (model, bits, count, "
          "version)" if on_milvus else "ok: every file's checksum matches")
    typer.echo(json.dumps(manifest, indent=2, ensure_ascii=False) if as_json else describe(manifest) + "\n" + ok)


@index_app.command("add")
@_friendly_errors
def add_cmd(
    index: Path = typer.Option(..., help="An index folder to add items to (a new version, written atomically)."),
    data: str = typer.Option(..., help="The new items: a folder or list file in the folder format, or a dataset name."),
    rows: str = typer.Option("all", help="all | query | retrieval | train | val (a part of the split)."),
    split: Optional[Path] = typer.Option(None, help="Split JSON for --rows."),
    checkpoint: Optional[Path] = typer.Option(None, help="The checkpoint (default: the one the index was built with; "
                                              "its fingerprint must match)."),
    batch_size: int = typer.Option(256, min=1, help="Items encoded per batch (bounds memory)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar."),
) -> None:
    """Encode new items with the index's own model and append them (ids must be new)."""
    from adah.index.update import add_items

    result = add_items(index, data, rows=rows, split=split, model=checkpoint or "auto", batch_size=batch_size,
                       device=device, progress=not quiet)
    typer.echo(f"added {result.added:,} items in {result.seconds:.1f}s: {result.count:,} items now "
               f"(generation {result.generation})")


@index_app.command("remove")
@_friendly_errors
def remove_cmd(
    index: Path = typer.Option(..., help="An index folder to remove items from (a new version, written atomically)."),
    ids: Optional[str] = typer.Option(None, help="Comma-separated item ids (the 'id' of each hit)."),
    ids_file: Optional[Path] = typer.Option(None, help="A text file of item ids, one per line (for ids that "
                                            "contain a comma)."),
) -> None:
    """Drop items by id (every id must be in the index)."""
    from adah.index.update import read_ids_file, remove_items

    if (ids is None) == (ids_file is None):
        raise AdahError("give exactly one of --ids and --ids-file")
    wanted = read_ids_file(ids_file) if ids_file is not None else [i.strip() for i in ids.split(",") if i.strip()]
    if not wanted:
        raise AdahError("--ids: give at least one item id (comma-separated)")
    result = remove_items(index, wanted)
    typer.echo(f"removed {result.removed:,} items in {result.seconds:.1f}s: {result.count:,} items now "
               f"(generation {result.generation})")


@index_app.command("copy")
@_friendly_errors
def copy_cmd(
    index: Path = typer.Option(..., help="The index folder to copy (read and checksum-verified, not re-encoded)."),
    out: Path = typer.Option(..., "-o", "--out", help="Index folder to write (atomically; see --overwrite)."),
    backend: str = typer.Option("local", help="local | milvus (the codes also in new Milvus collections)."),
    uri: Optional[str] = typer.Option(None, help="milvus: a Milvus Lite file or http://HOST:19530 (default "
                                      "$ADAH_MILVUS_URI); credentials only in $ADAH_MILVUS_TOKEN."),
    collection: Optional[str] = typer.Option(None, help="milvus: base name of the collections (default "
                                             "adah_<OUT folder name>_<hash of its path>)."),
    index_type: str = typer.Option("BIN_FLAT", help="milvus: BIN_FLAT (exact) | BIN_IVF_FLAT (a Milvus server only)."),
    nlist: int = typer.Option(1024, min=1, help="milvus BIN_IVF_FLAT: number of clusters."),
    overwrite: bool = typer.Option(False, help="Replace an existing index in OUT."),
) -> None:
    """Copy an index to another folder or backend without re-encoding (e.g. a local index onto Milvus)."""
    from adah.index.update import copy_index

    check_output_folder(out)
    result = copy_index(index, out, backend=backend, uri=uri, name=collection, index_type=index_type, nlist=nlist,
                        force=overwrite)
    where = f" (codes on Milvus at {result.manifest['milvus']['uri']})" if result.manifest.get("milvus") else ""
    typer.echo(f"copied {result.count:,} items in {result.seconds:.1f}s to {result.path}{where}")


app.add_typer(index_app, name="index")


@app.command()
@_friendly_errors
def search(
    index: Path = typer.Option(..., help="An index folder written by adah index build."),
    text: Optional[str] = typer.Option(None, help="A text query (finds images by default)."),
    image: Optional[Path] = typer.Option(None, help="An image file as the query (finds texts by default)."),
    k: int = typer.Option(10, "-k", "--top-k", min=1, help="How many results."),
    target: Optional[str] = typer.Option(None, help="image | text: which codes to search (default: the other "
                                         "modality)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    checkpoint: Optional[Path] = typer.Option(None, help="The checkpoint (default: the one the index was built with)."),
    backend: str = typer.Option("auto", help="auto (milvus for an index built on Milvus, else faiss) | faiss | numpy "
                                "(exact, identical) | multihash (approximate) | milvus."),
    uri: Optional[str] = typer.Option(None, help="milvus: the Milvus URI (default $ADAH_MILVUS_URI, else the one "
                                      "recorded in the index)."),
    nprobe: Optional[int] = typer.Option(None, min=1, help="milvus BIN_IVF_FLAT: clusters probed per query."),
    nhash: Optional[int] = typer.Option(None, min=1, help="multihash: number of hash tables (substrings)."),
    hash_bits: Optional[int] = typer.Option(None, min=1, help="multihash: bits per substring (b)."),
    nflip: Optional[int] = typer.Option(None, min=0, help="multihash: bits flipped when probing (default 1)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    explain: bool = typer.Option(False, help="Text query: show which words the text attention keeps, in [brackets] "
                                 "(word-level text encoders such as minilm)."),
) -> None:
    """Top-k items by Hamming distance for a text or an image query: a table, or --json."""
    from adah.index import Index

    if (text is None) == (image is None):
        raise AdahError("give exactly one of --text and --image")
    if explain and text is None:
        raise AdahError("--explain shows the words a text query keeps; for an image query's attention use the page "
                        "or adah eval --attention-png")
    options = {k: v for k, v in (("nhash", nhash), ("b", hash_bits), ("nflip", nflip)) if v is not None}
    if options and backend != "multihash":
        raise AdahError(f"--nhash, --hash-bits and --nflip are for --backend multihash, not {backend!r}")
    if text is not None:  # bytes that were not UTF-8 in argv arrive as lone surrogates: make them U+FFFD
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    options.update({k: v for k, v in (("uri", uri), ("nprobe", nprobe)) if v is not None})
    with Index.load(index, model=checkpoint or "auto", backend=backend, device=device, **options) as loaded:
        if text is not None:
            result = loaded.search_text(text, k=k, target=target or "image", explain=explain)
        else:
            result = loaded.search_image(image, k=k, target=target or "text")
    if as_json:
        out = json.dumps(result.to_dict(), ensure_ascii=False)
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in the index's metadata: escaped, still valid JSON
            out = json.dumps(result.to_dict(), ensure_ascii=True)
        typer.echo(out)
        return
    q = result.query
    if q["modality"] == "text" and q["unknown_tokens"]:
        typer.echo(f"not in the vocabulary, ignored: {', '.join(q['unknown_tokens'])}")
    if result.text_attention is not None:
        kept = [w["word"] for w in result.text_attention if w["kept"]]
        typer.echo(f"text attention keeps {len(kept)} of {len(result.text_attention)} words: {result.format_words()}")
    typer.echo(result.format_table())
    t = result.timings_ms
    typer.echo(f"\n{len(result.hits)} {result.target} results of {len(loaded):,}; encode {t['encode']:.1f} ms, "
               f"search {t['search']:.1f} ms ({'exact' if result.exact else 'approximate'}, {loaded.backend_name})")
