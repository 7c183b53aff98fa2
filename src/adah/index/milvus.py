"""The ``milvus`` backend: the index's codes in Milvus collections, searched by Milvus.

One engine for a collection that outgrows one process: embedded **Milvus Lite** (a local file,
``--uri runs/index.db``; what the tests use) or a **Milvus server or cluster** (``--uri
http://HOST:19530``) that several ``adah serve`` replicas share. The credentials come from the
environment only (``ADAH_MILVUS_TOKEN``: ``user:password`` or an API key); the URI may come from
``ADAH_MILVUS_URI`` too (it overrides the one recorded in the index).

Layout. The index folder (:mod:`adah.index.store`) stays the source of truth and the pointer:
its manifest (model, vocabulary, format version), metadata (``meta.jsonl``, memory-mapped:
cheap reads by row) and code files are written as for a local index, and ``manifest["milvus"]``
names the collections that hold the same codes, one per modality::

    {"version": 1, "uri": "/abs/runs/index.db" | "http://host:19530", "name": "adah_idx",
     "collections": {"image": "adah_idx_image_g0_1a2b3c", "text": ...},
     "index_type": "BIN_FLAT" | "BIN_IVF_FLAT", "params": {"nlist": 1024}}

A collection has the fields ``row`` (INT64 primary key: the index row) and ``code``
(``BINARY_VECTOR`` of ``ceil(bits/8) * 8`` bits, metric ``HAMMING``); its description is a JSON
object with the format name and version, the model fingerprint, bits, count and modality, checked
against the manifest on load, so a collection of another model, size or format version is
refused with a one-line message, as the local format does.

Builds and updates (``adah index build --backend milvus``, ``adah index add/remove``) write the
codes to *new* collections (a fresh name per version) before the folder is swapped into place;
only then are older versions' collections dropped (on a server, the version just replaced stays
until the next write, for replicas still serving it: :meth:`MilvusTarget.drop_replaced`). A build
killed at any moment leaves the old manifest, which still names the old, complete collections:
the index stays searchable.
(Collections left by a killed build are dropped by the next successful write.)

Search. ``BIN_FLAT`` is exact: results are put in the canonical order (distance, then row) and
ties at the k-th distance are completed by asking Milvus for more results until the k-th
distance is passed, so the answer equals faiss ``IndexBinaryFlat``'s. ``BIN_IVF_FLAT`` (Milvus
server only: Milvus Lite supports ``BIN_FLAT`` alone) is approximate; ``nprobe`` trades speed for
recall, to be measured with :func:`adah.index.backends.recall_at_k`; a query whose probed
clusters hold fewer than k codes is asked again with more, and ``nprobe = nlist`` is exact.
A search failing (server down or restarting, past ``$ADAH_MILVUS_TIMEOUT``) raises
:class:`MilvusUnavailable` (``adah serve``: 503). Collections are created ``Strong`` and filled,
flushed, indexed and loaded before the manifest names them; on open each is checked against the
manifest (description, schema, index type, live row count).

Milvus Lite holds its file in one process: every adah process takes its own lock beside the
file first (:func:`claim_lite`), and a ``--uri`` that is another program's file is refused.
The deployment guide: docs/deployment-milvus.md.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import re
import secrets
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from adah.errors import AdahError, ServiceUnavailable
from adah.index import store
from adah.index.backends import HammingBackend, check_k, check_packed, code_bytes
from adah.utils.locks import exclusive, lock_file_beside

FORMAT = "adah-index-milvus"
FORMAT_VERSION = 1
INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
URI_ENV, TOKEN_ENV, TIMEOUT_ENV = "ADAH_MILVUS_URI", "ADAH_MILVUS_TOKEN", "ADAH_MILVUS_TIMEOUT"
MAX_TOPK = 16_384  # Milvus' largest limit per query
INSERT_BYTES = 400_000  # codes per insert call: 50,000 of 64 bits (a message well under gRPC's 64 MB)
QUERY_CHUNK = 1_024
DEFAULT_NPROBE = 16
# searches: Bounded, not the collections' Strong (which waits for the server's next time tick on
# every call: 238 against 1,850 queries/s in one measurement): a collection is immutable once a
# manifest names it (written, flushed, indexed and loaded first), so there is nothing newer to wait for
SEARCH_CONSISTENCY = "Bounded"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_CLIENTS: dict[tuple[str, str], Any] = {}
_LITE_HELD: dict[str, contextlib.ExitStack] = {}  # Lite files this process holds adah's lock on
_SQLITE_MAGIC = b"SQLite format 3\x00"


class MilvusError(AdahError):
    """Milvus unreachable, a collection missing or not matching the index."""


class MilvusUnavailable(MilvusError, ServiceUnavailable):
    """A search Milvus did not answer (server down, restarting, overloaded or past the timeout)."""


# --------------------------------------------------------------------------- client
def _pymilvus():
    """pymilvus, importable without setuptools' ``pkg_resources`` (milvus-lite 2.5 imports it
    only to read its own version; setuptools >= 81 no longer ships it, and torch needs a
    setuptools newer than that)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")

        class DistributionNotFound(Exception):
            pass

        def get_distribution(name: str):
            try:
                return types.SimpleNamespace(version=importlib.metadata.version(name))
            except importlib.metadata.PackageNotFoundError:
                raise DistributionNotFound(name) from None

        shim.DistributionNotFound, shim.get_distribution = DistributionNotFound, get_distribution
        sys.modules.setdefault("pkg_resources", shim)
    try:
        import pymilvus
    except ImportError:
        raise MilvusError("the milvus backend needs pymilvus and milvus-lite: pip install 'adah[milvus]'") from None
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # its errors become our one-line messages
    return pymilvus


def available() -> bool:
    """True when pymilvus and milvus-lite import (the ``adah[milvus]`` extra is installed)."""
    try:
        _pymilvus()
        import milvus_lite  # noqa: F401
    except (MilvusError, ImportError):
        return False
    return True


def is_lite(uri: str) -> bool:
    """A Milvus Lite file (a local path) rather than a server URI."""
    return "://" not in uri


def resolve_uri(uri: str | os.PathLike | None, recorded: str | None = None) -> str:
    """The URI to use: ``uri`` when given, else ``$ADAH_MILVUS_URI``, else ``recorded`` (the
    manifest's). A Lite path becomes absolute. Credentials in the URI are refused: they belong
    in ``$ADAH_MILVUS_TOKEN``, never on a command line or in the index."""
    value = str(uri) if uri is not None else os.environ.get(URI_ENV) or recorded
    if not value or not str(value).strip():
        raise MilvusError(f"no Milvus URI: pass --uri (a Milvus Lite file such as runs/index.db, or "
                          f"http://HOST:19530) or set {URI_ENV}")
    value = str(value).strip()
    if is_lite(value):
        return str(Path(value).expanduser().resolve())
    scheme, _, rest = value.partition("://")
    if scheme not in ("http", "https", "tcp", "grpc"):
        raise MilvusError(f"Milvus URI {value!r}: the scheme must be http, https, tcp or grpc (or give a file path "
                          "for Milvus Lite)")
    if "@" in rest.split("/", 1)[0]:
        raise MilvusError(f"the Milvus URI must not hold credentials; put them in ${TOKEN_ENV} (user:password or an "
                          "API key) instead")
    return value


def connect(uri: str, *, create: bool = False):
    """A MilvusClient for ``uri`` (cached per process), with ``$ADAH_MILVUS_TOKEN``. A Lite file
    must exist unless ``create``. MilvusError with one line when it cannot be reached."""
    pymilvus = _pymilvus()
    token = os.environ.get(TOKEN_ENV, "")
    key = (uri, token)
    if key in _CLIENTS:
        return _CLIENTS[key]
    if is_lite(uri):
        claim_lite(uri, create=create)
    import grpc

    try:
        client = pymilvus.MilvusClient(uri=uri, token=token, timeout=query_timeout())
    except (pymilvus.exceptions.MilvusException, grpc.RpcError) as exc:
        raise MilvusError(f"cannot reach Milvus at {uri}: {_message(exc)}") from None
    _CLIENTS[key] = client
    return client


def query_timeout() -> int:
    """Seconds a connection or one search may take, retries included (``$ADAH_MILVUS_TIMEOUT``,
    default 10, rounded up to whole seconds: pymilvus bounds its retries by whole seconds only):
    past it the search fails with one line (``adah serve`` answers 503) instead of hanging."""
    raw = os.environ.get(TIMEOUT_ENV, "10")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86_400:
        raise MilvusError(f"${TIMEOUT_ENV} must be a number of seconds in (0, 86400], got {raw!r}")
    return math.ceil(value)


def claim_lite(uri: str, *, create: bool = False) -> None:
    """Take adah's own lock on the Milvus Lite file ``uri`` (``.NAME.adah.lock`` beside it) for
    the rest of this process, after checking the file is a Milvus Lite database (or does not
    exist yet and ``create``). A Lite file is served by one process at a time; milvus-lite's
    own lock cannot be trusted for that (a process that fails to open the file deletes
    ``.NAME.lock``, and the next one then opens it beside its holder), so every adah process
    that touches a Lite file holds this lock first, and a second one is refused with one line."""
    if uri in _LITE_HELD:
        return
    path = Path(uri)
    if not path.parent.is_dir():
        raise MilvusError(f"Milvus Lite file {uri}: its folder does not exist")
    if not create and not path.is_file():
        raise MilvusError(f"Milvus Lite file not found: {uri} (build the index with --backend milvus --uri)")
    stack = contextlib.ExitStack()
    stack.enter_context(exclusive(lock_file_beside(path), f"Milvus Lite file {uri} (a Lite file serves one process "
                                  "at a time: stop the other one, e.g. `adah serve`, or put the index on a Milvus "
                                  "server, --uri http://HOST:19530)"))
    try:
        check_lite_file(path)
    except BaseException:
        stack.close()
        raise
    _LITE_HELD[uri] = stack


def check_lite_file(path: Path) -> None:
    """MilvusError unless ``path`` is absent, empty, or a Milvus Lite database (SQLite with
    milvus-lite's ``collection_meta`` table): ``--uri`` never writes into another program's file."""
    import sqlite3

    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    refuse = (f"--uri {path}: this file is not a Milvus Lite database (adah writes its collections only into one, "
              "or into a new file): choose another path")
    if not path.is_file():
        raise MilvusError(f"--uri {path}: a folder, not a Milvus Lite file (give a file path such as runs/index.db)")
    with open(path, "rb") as f:
        if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
            raise MilvusError(refuse)
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise MilvusError(f"--uri {path}: cannot read it as a Milvus Lite database ({exc})") from None
    if "collection_meta" not in tables:
        raise MilvusError(refuse)


def _message(exc: Exception) -> str:
    if callable(getattr(exc, "details", None)) and callable(getattr(exc, "code", None)):  # a bare gRPC error
        text = f"{getattr(exc.code(), 'name', exc.code())}: {exc.details()}"
    else:
        text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:300]


def _call(what: str, fn, *args, error: type[MilvusError] = MilvusError, **kwargs):
    """``fn(*args, **kwargs)``; a failure (pymilvus' own, or a gRPC error it lets through when
    the server dies mid-call) becomes ``error`` with one line."""
    import grpc

    pymilvus = _pymilvus()
    try:
        return fn(*args, **kwargs)
    except (pymilvus.exceptions.MilvusException, grpc.RpcError) as exc:
        raise error(f"Milvus {what} failed: {_message(exc)}") from None


def default_name(out: Path) -> str:
    """``adah_<folder name>_<8 hex of its absolute path>`` (anything but letters, digits and _
    replaced): two index folders of the same name elsewhere never share collections. The name
    is recorded in the manifest, so later updates use it wherever the folder is read from."""
    import hashlib

    path = Path(out).expanduser().resolve()
    tag = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"adah_{re.sub(r'[^A-Za-z0-9_]', '_', path.name)[:100]}_{tag}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 150:
        raise MilvusError(f"Milvus collection name {name!r}: letters, digits and _ only, starting with a letter or _, "
                          "at most 150 characters")
    return name


# --------------------------------------------------------------------------- writing
class MilvusTarget:
    """Where a build or an update puts its codes: URI, base collection name, index type and
    parameters. :meth:`publish` is :func:`adah.index.build.write_index`'s ``publish`` hook."""

    def __init__(self, uri: str | None, name: str, *, index_type: str = "BIN_FLAT", nlist: int = 1024,
                 recorded_uri: str | None = None) -> None:
        self.uri = resolve_uri(uri, recorded_uri)
        self.name = check_name(name)
        if index_type not in INDEX_TYPES:
            raise MilvusError(f"Milvus index type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
        if is_lite(self.uri) and index_type != "BIN_FLAT":
            raise MilvusError(f"Milvus Lite ({self.uri}) supports BIN_FLAT only; {index_type} needs a Milvus server "
                              "(--uri http://HOST:19530)")
        if isinstance(nlist, bool) or not isinstance(nlist, int) or not 1 <= nlist <= 65536:
            raise MilvusError(f"nlist must be an integer in [1, 65536], got {nlist!r}")
        self.index_type, self.nlist = index_type, nlist
        if is_lite(self.uri):  # refused before any work when another process holds the file
            claim_lite(self.uri, create=True)

    @classmethod
    def from_manifest(cls, section: dict, uri: str | None = None) -> "MilvusTarget":
        return cls(uri, section.get("name", ""), index_type=section.get("index_type", "BIN_FLAT"),
                   nlist=int((section.get("params") or {}).get("nlist", 1024)), recorded_uri=section.get("uri"))

    def publish(self, staging: Path, fields: dict) -> dict:
        """Copy the staged code files into new collections; the manifest section naming them."""
        client = connect(self.uri, create=True)
        bits, count, fingerprint = fields["bits"], fields["count"], fields["model"]["fingerprint"]
        tag = f"g{int(fields.get('generation') or 0)}_{secrets.token_hex(3)}"
        names = {}
        for modality in fields["modalities"]:
            codes = store.read_binary(staging / store.CODE_FILES[modality], kind=f"codes:{modality}", bits=bits,
                                      row_bytes=code_bytes(bits), count=count, fingerprint=fingerprint)
            names[modality] = self._create(client, f"{self.name}_{modality}_{tag}", codes, modality, bits,
                                           fingerprint)
        params = {"nlist": self.nlist} if self.index_type == "BIN_IVF_FLAT" else {}
        return {"milvus": {"version": FORMAT_VERSION, "uri": self.uri, "name": self.name, "collections": names,
                           "index_type": self.index_type, "params": params}}

    def _create(self, client, name: str, codes: np.ndarray, modality: str, bits: int, fingerprint: str) -> str:
        pymilvus = _pymilvus()
        description = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fingerprint,
                                  "bits": bits, "count": int(len(codes)), "modality": modality},
                                 separators=(",", ":"))
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                     description=description)
        schema.add_field("row", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("code", pymilvus.DataType.BINARY_VECTOR, dim=codes.shape[1] * 8)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="code", index_type=self.index_type, metric_type="HAMMING",
                               params={"nlist": self.nlist} if self.index_type == "BIN_IVF_FLAT" else {})
        # Strong: a search sees every row inserted before it; the codes go in first, then flush
        # (all rows in sealed segments), then the index (create_index waits until every segment
        # is indexed), then load: the first search after publish sees all rows, indexed.
        _call("create_collection", client.create_collection, name, schema=schema, consistency_level="Strong")
        try:
            insert, chunk = _column_insert(client, name), max(1, INSERT_BYTES // codes.shape[1])
            for start in range(0, len(codes), chunk):
                _call("insert", insert, start, codes[start : start + chunk])
            _call("flush", client.flush, name)
            _call("create_index", client.create_index, name, index_params)
            _call("load_collection", client.load_collection, name)
        except BaseException:
            try:
                client.drop_collection(name)
            except Exception:  # noqa: BLE001 - best effort; the next write drops leftovers
                pass
            raise
        return name

    def drop_replaced(self, old: dict | None, new: dict | None) -> list[str]:
        """Drop the collections of earlier versions of this index and any left by killed writes
        (``<name>_<modality>_g<N>_<hex>`` not named by ``new``); the names dropped. On a server
        the replaced version's (``old``) stay until the next write: ``adah serve`` replicas
        still answer from it until they notice the new manifest (within a second), and a search
        of a dropped collection would fail (503). On Milvus Lite (one process) they go now.
        Best effort: the new version is in place already, so a Milvus that fails now (down,
        restarting) is logged, and the next write drops what is left."""
        keep = set((new or {}).get("collections", {}).values())
        same_place = (old or {}).get("uri") == self.uri
        stale = set((old or {}).get("collections", {}).values()) if same_place else set()
        if not is_lite(self.uri):
            keep |= stale
        pattern = re.compile(rf"^{re.escape(self.name)}_(image|text)_g\d+_[0-9a-f]{{6}}$")
        try:
            client = connect(self.uri)
            stale |= {c for c in _call("list_collections", client.list_collections, timeout=query_timeout())
                      if pattern.match(c)}
        except MilvusError as exc:
            logging.getLogger("adah.index").warning("the replaced collections stay at %s for now: %s", self.uri, exc)
            return []
        dropped = []
        for name in sorted(stale - keep):
            try:
                client.drop_collection(name, timeout=query_timeout())
                dropped.append(name)
            except Exception:  # noqa: BLE001 - a collection already gone, or Milvus down: the next write drops it
                pass
        return dropped


def _column_insert(client, name: str):
    """``insert(start, codes)``: rows ``start...`` with their codes, sent column-wise through
    pymilvus' ORM ``Collection`` on the client's own connection. (``MilvusClient.insert`` takes
    rows and packs binary vectors in time quadratic in the rows per call: 50,000 64-bit codes took
    40 s; column-wise, 0.5 s.)"""
    collection = _pymilvus().Collection(name, using=client._using)

    def insert(start: int, block: np.ndarray) -> None:
        collection.insert([list(range(start, start + len(block))), [row.tobytes() for row in block]])

    return insert


def recorded_section(out: Path) -> dict | None:
    """The ``milvus`` section of the index already in ``out`` (the collections a new write there
    replaces and drops), or None when there is none or it cannot be read."""
    if not (out / store.MANIFEST).is_file():
        return None
    try:
        return store.read_manifest(out).get("milvus")
    except store.IndexFormatError:
        return None


def build_on_milvus(checkpoint: str | os.PathLike, out: str | os.PathLike, *, uri: str | None = None,
                    name: str | None = None, index_type: str = "BIN_FLAT", nlist: int = 1024, **build_options):
    """:func:`adah.index.build_index` with the codes also written to new Milvus collections
    (``name``: their base name, default ``adah_<folder name>``); the collections of the version
    it replaces are dropped once the new folder is in place. Returns the BuildResult."""
    from adah.index.build import build_index

    out = Path(out)
    target = MilvusTarget(uri, name or default_name(out), index_type=index_type, nlist=nlist)
    old = recorded_section(out)
    store.check_destination(out, overwrite=bool(build_options.get("force")))
    result = build_index(checkpoint, out, publish=target.publish, **build_options)
    target.drop_replaced(old, result.manifest.get("milvus"))
    return result


# --------------------------------------------------------------------------- searching
class MilvusBackend(HammingBackend):
    """Search one Milvus collection (see the module docstring): the :class:`HammingBackend`
    contract, packed (m, nbytes) uint8 queries in, ``(distances int32, rows int64)`` out."""

    name = "milvus"

    def __init__(self, client, collection: str, bits: int, count: int, *, exact: bool = True,
                 nprobe: int | None = None, nlist: int | None = None) -> None:
        self.bits, self.collection, self.client = bits, collection, client
        self._count = int(count)
        self.nlist = None if exact else int(nlist or 1024)
        self.nprobe = None if exact else min(int(nprobe or DEFAULT_NPROBE), self.nlist)
        self.exact = exact or self.nprobe >= self.nlist  # BIN_IVF_FLAT probing every cluster is exact

    def __len__(self) -> int:
        return self._count

    @property
    def codes(self) -> np.ndarray:
        raise AdahError("the codes of a Milvus index stay in Milvus; load it with backend='faiss' to read them")

    def _raw(self, queries: np.ndarray, limit: int, nprobe: int | None) -> list[list[dict]]:
        params = {"metric_type": "HAMMING", "params": {} if nprobe is None else {"nprobe": nprobe}}
        return _call(f"search of {self.collection} (server down or restarting? try again)", self.client.search,
                     self.collection, data=[q.tobytes() for q in queries], limit=limit, anns_field="code",
                     search_params=params, output_fields=[], timeout=query_timeout(), error=MilvusUnavailable,
                     consistency_level=SEARCH_CONSISTENCY)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact (``BIN_FLAT``): the canonical top k, ties at the k-th distance completed by asking
        for more. Approximate (``BIN_IVF_FLAT``): the probed clusters may hold fewer than k codes;
        such queries are asked again with 4x ``nprobe`` (up to ``nlist``), so every query gets k hits."""
        queries = check_packed(queries, self.bits, "query codes")
        k = min(check_k(k), len(self))
        m = len(queries)
        dist_out = np.full((m, k), np.iinfo(np.int32).max, dtype=np.int32)
        rows_out = np.full((m, k), -1, dtype=np.int64)
        if m == 0 or k == 0:
            return dist_out, rows_out
        most = min(len(self), MAX_TOPK)
        for start in range(0, m, QUERY_CHUNK):
            todo = np.arange(start, min(m, start + QUERY_CHUNK))
            limit, nprobe = (min(most, max(k + 16, 2 * k)) if self.exact else min(k, MAX_TOPK)), self.nprobe
            while len(todo):
                again = []
                for q, hits in zip(todo, self._raw(queries[todo], limit, nprobe)):
                    rows = np.fromiter((h["id"] for h in hits), dtype=np.int64, count=len(hits))
                    dist = np.fromiter((round(h["distance"]) for h in hits), dtype=np.int64, count=len(hits))
                    order = np.lexsort((rows, dist))  # canonical: distance, then row
                    rows, dist = rows[order], dist[order]
                    if self.exact:  # results beyond k show whether every tie at the k-th distance came back
                        retry = (len(rows) == limit and limit < most and len(rows) > k - 1
                                 and dist[-1] == dist[min(k, len(rows)) - 1])
                    else:
                        retry = len(rows) < min(k, MAX_TOPK) and nprobe < self.nlist
                    if retry:
                        again.append(q)
                        continue
                    n = min(k, len(rows))
                    dist_out[q, :n], rows_out[q, :n] = dist[:n], rows[:n]
                todo = np.asarray(again, dtype=np.int64)
                if self.exact:
                    limit = min(most, limit * 4)
                else:
                    nprobe = min(self.nlist, nprobe * 4)
        return dist_out, rows_out


def make_milvus_backend(packed: np.ndarray, bits: int, *, uri: str | os.PathLike, name: str,
                        index_type: str = "BIN_FLAT", nlist: int = 1024, nprobe: int | None = None,
                        fingerprint: str = "codes") -> MilvusBackend:
    """A collection ``name`` (replaced if it exists) holding ``packed`` codes, and its backend:
    for tests and benchmarks of the backend alone, without an index folder."""
    packed = check_packed(packed, bits, "database codes")
    target = MilvusTarget(str(uri), name, index_type=index_type, nlist=nlist)
    client = connect(target.uri, create=True)
    if _call("has_collection", client.has_collection, name):
        _call("drop_collection", client.drop_collection, name)
    target._create(client, name, packed, "image", bits, fingerprint)
    return MilvusBackend(client, name, bits, len(packed), exact=index_type == "BIN_FLAT", nprobe=nprobe, nlist=nlist)


def open_backends(folder: Path, manifest: dict, *, uri: str | None = None, nprobe: int | None = None
                  ) -> dict[str, MilvusBackend]:
    """One backend per modality for the index in ``folder``, after checking each collection's
    description (format, version, model fingerprint, bits, count, modality) against the manifest."""
    section = manifest.get("milvus")
    if not isinstance(section, dict) or not isinstance(section.get("collections"), dict):
        raise MilvusError(f"{folder}: this index was not built on Milvus (rebuild it with `adah index build "
                          "--backend milvus --uri ...`), or load it with another backend")
    if section.get("version") != FORMAT_VERSION:
        raise MilvusError(f"{folder}: Milvus layout version {section.get('version')!r}; this adah reads "
                          f"{FORMAT_VERSION}: rebuild the index")
    if nprobe is not None and (isinstance(nprobe, bool) or not isinstance(nprobe, int) or not 1 <= nprobe <= 65536):
        raise MilvusError(f"nprobe must be an integer in [1, 65536], got {nprobe!r}")
    where = resolve_uri(uri, section.get("uri"))
    client = connect(where)
    exact = section.get("index_type", "BIN_FLAT") == "BIN_FLAT"
    nlist = int((section.get("params") or {}).get("nlist", 1024))
    bits, count = manifest["bits"], manifest["count"]
    backends = {}
    for modality in manifest["modalities"]:
        name = section["collections"].get(modality)
        if not isinstance(name, str) or not _call("has_collection", client.has_collection, name):
            raise MilvusError(f"Milvus collection {name!r} ({modality} codes of {folder}) not found at {where}: it was "
                              "dropped, or this is another Milvus; rebuild the index with --backend milvus")
        _check_collection(client, name, where, folder, manifest, modality)
        backends[modality] = MilvusBackend(client, name, bits, count, exact=exact, nprobe=nprobe, nlist=nlist)
    return backends


def _check_collection(client, name: str, where: str, folder: Path, manifest: dict, modality: str) -> None:
    """MilvusError naming what differs when the collection ``name`` is not the one the manifest
    describes: its description (format, version, model fingerprint, bits, count, modality), its
    schema (``row`` INT64 key, ``code`` binary vector of the index's width), its index type, and
    its live row count (rows deleted or inserted behind adah's back). Loads it."""
    fingerprint, bits, count = manifest["model"]["fingerprint"], manifest["bits"], manifest["count"]
    described = _call("describe_collection", client.describe_collection, name)
    try:
        desc = json.loads(described.get("description") or "")
    except json.JSONDecodeError:
        desc = None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise MilvusError(f"Milvus collection {name!r} at {where} was not written by adah (no {FORMAT} description)")
    if desc.get("version") != FORMAT_VERSION:
        raise MilvusError(f"Milvus collection {name!r}: format version {desc.get('version')!r}; this adah reads "
                          f"{FORMAT_VERSION}: rebuild the index with `adah index build --backend milvus`")
    if desc.get("fingerprint") != fingerprint:
        raise MilvusError(f"Milvus collection {name!r} holds codes of model {desc.get('fingerprint')} but the index "
                          f"{folder} is for model {fingerprint}: rebuild the index")
    for key, want in (("bits", bits), ("count", count), ("modality", modality)):
        if desc.get(key) != want:
            raise MilvusError(f"Milvus collection {name!r}: {key} is {desc.get(key)!r} but the index {folder} says "
                              f"{want!r}: rebuild the index")
    fields = {f.get("name"): f for f in described.get("fields", [])}
    dim = (fields.get("code", {}).get("params") or {}).get("dim")
    if set(fields) != {"row", "code"} or not fields["row"].get("is_primary") or int(dim or 0) != code_bytes(bits) * 8:
        raise MilvusError(f"Milvus collection {name!r}: its schema was changed (fields {sorted(fields)}, code width "
                          f"{dim}); the index {folder} needs row + code of {code_bytes(bits) * 8} bits: rebuild the "
                          "index")
    want_type = (manifest.get("milvus") or {}).get("index_type", "BIN_FLAT")
    indexes = [_call("describe_index", client.describe_index, name, i) for i in
               _call("list_indexes", client.list_indexes, name)]
    if [i.get("index_type") for i in indexes] != [want_type]:
        raise MilvusError(f"Milvus collection {name!r}: index {[i.get('index_type') for i in indexes]} but the index "
                          f"{folder} was built with {want_type}: rebuild the index")
    _call("load_collection", client.load_collection, name)
    rows = _call("query", client.query, name, filter="", output_fields=["count(*)"])
    live = int(rows[0]["count(*)"]) if rows else 0
    if live != count:
        raise MilvusError(f"Milvus collection {name!r} holds {live} rows but the index {folder} has {count}: rows were "
                          "deleted or inserted behind adah's back; rebuild the index")


__all__ = ["FORMAT_VERSION", "INDEX_TYPES", "MilvusBackend", "MilvusError", "MilvusTarget", "MilvusUnavailable",
           "build_on_milvus", "claim_lite", "connect", "default_name", "make_milvus_backend", "open_backends",
           "query_timeout", "resolve_uri"]
