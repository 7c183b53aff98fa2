"""Search with hash codes: a binary-code index of a collection, and text / image queries.

* :func:`build_index` (``adah index build``): encode a collection with a trained model into an
  index folder (format in :mod:`adah.index.store`: versioned, checksummed, written atomically).
* :class:`Index` (``adah search``): load it with its model; :meth:`Index.search_text`,
  :meth:`Index.search_image`, :meth:`Index.search_codes`. A facade over its two parts:
  :class:`~adah.index.storage.IndexStorage` (the folder opened and checked, codes behind their
  backends, metadata, the version for hot reload) and :class:`~adah.index.query.QueryEncoder`
  (text and images into codes with the model).
* :func:`add_items` / :func:`remove_items` (``adah index add|remove``, :mod:`adah.index.update`):
  a new version of the folder, written atomically; :func:`copy_index` (``adah index copy``): the
  same index in another folder or on another backend, not re-encoded.
* Backends (:mod:`adah.index.backends`): faiss ``IndexBinaryFlat`` (exact), a numpy fallback
  with identical results, faiss ``IndexBinaryMultiHash`` (approximate, sublinear); Milvus
  (:mod:`adah.index.milvus`, the ``adah[milvus]`` extra), exact ``BIN_FLAT`` or ``BIN_IVF_FLAT``.
"""

from adah.index.backends import BACKENDS, faiss_available, hamming_distances, numpy_knn, recall_at_k
from adah.index.build import BuildResult, build_index, model_fingerprint, write_index
from adah.index.core import (AttentionMap, Hit, ImageQueryError, Index, QueryError, SearchResult,
                             UnknownWordsError, decode_image)
from adah.index.store import FORMAT_VERSION, IndexFormatError
from adah.index.update import UpdateResult, add_items, copy_index, remove_items

__all__ = [
    "AttentionMap", "BACKENDS", "BuildResult", "FORMAT_VERSION", "Hit", "ImageQueryError", "Index",
    "IndexFormatError", "QueryError", "SearchResult", "UnknownWordsError", "build_index", "decode_image",
    "UpdateResult", "add_items", "faiss_available", "hamming_distances", "model_fingerprint", "numpy_knn",
    "recall_at_k", "remove_items", "write_index", "copy_index",
]
