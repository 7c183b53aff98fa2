"""Query encoding: what turns a text or an image query into a binary code with an index's model.

Query problems (empty text, unknown words, an unreadable image) raise :class:`QueryError` and
its subclasses: ``ValueError`` subclasses with one-line messages.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adah.errors import AdahError
from adah.utils.images import QUERY_MAX_PIXELS, ImageTooLarge, decode_rgb

MAX_IMAGE_PIXELS = QUERY_MAX_PIXELS  # decoded size limit for query images (decompression bombs)


class QueryError(AdahError):
    """A query that cannot be answered as asked (empty, unreadable, unknown words, no such codes)."""


class UnknownWordsError(QueryError):
    """No token of a text query is in the model's vocabulary; ``words`` lists the query's tokens."""

    def __init__(self, message: str, words: list[str]) -> None:
        super().__init__(message)
        self.words = words


class ImageQueryError(QueryError):
    """A query image that cannot be read or decoded."""


@dataclass
class AttentionMap:
    """The image attention G of a query image: binary mask Z and soft attention p over the
    backbone's (h, w) grid (the image is resized to ``input_size`` before the backbone)."""

    mask: np.ndarray  # (h, w) uint8 in {0, 1}
    probs: np.ndarray  # (h, w) float32, sums to 1
    input_size: int

    def to_dict(self) -> dict:
        return {"mask": self.mask.astype(int).tolist(), "probs": np.round(self.probs, 6).tolist(),
                "grid": list(self.mask.shape), "input_size": self.input_size,
                "attended_fraction": float(self.mask.mean())}


def decode_image(image, size: int, resize: str = "stretch", *, max_pixels: int | None = None) -> np.ndarray:
    """A query image -> (3, size, size) uint8 RGB, resized like the indexed images (``stretch``
    or ``center_crop``). Accepts a path, encoded bytes, a PIL image, or a uint8 array
    (H, W, 3) / (3, H, W) / (H, W). ``max_pixels``: the decoded size limit (default
    :data:`MAX_IMAGE_PIXELS`). Raises ImageQueryError on anything unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(image, np.ndarray):
            arr = image
            if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
                arr = arr.transpose(1, 2, 0)
            if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
                raise ImageQueryError(f"an image array must be uint8 (H, W), (H, W, 3) or (3, H, W), "
                                      f"got {arr.dtype} {arr.shape}")
            if arr.size == 0:
                raise ImageQueryError("empty image array")
            im = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
            return _resize(im.convert("RGB"), size, resize)
        if isinstance(image, Image.Image):
            return _resize(image.convert("RGB"), size, resize)
        if isinstance(image, (bytes, bytearray, memoryview)):
            if len(image) == 0:
                raise ImageQueryError("empty image upload")
            source, what = io.BytesIO(bytes(image)), "the uploaded image"
        elif isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise ImageQueryError(f"image file not found: {path}")
            source, what = path, str(path)
        else:
            raise ImageQueryError(f"an image query must be a path, bytes, a PIL image or an array, "
                                  f"got {type(image).__name__}")
        return _resize(decode_rgb(source, max_pixels=max_pixels or MAX_IMAGE_PIXELS, what=what), size, resize)
    except ImageQueryError:
        raise
    except ImageTooLarge as exc:
        raise ImageQueryError(str(exc)) from None
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        what = "the uploaded image" if isinstance(image, (bytes, bytearray, memoryview)) else str(image)[:200]
        raise ImageQueryError(f"cannot read {what} as an image ({type(exc).__name__}: {exc})") from None


def _resize(im, size: int, resize: str) -> np.ndarray:
    from PIL import Image

    if resize == "center_crop":
        w, h = im.size
        s = size / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
        left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
        im = im.crop((left, top, left + size, top + size))
    else:
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
