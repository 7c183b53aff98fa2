"""Pictures in and out of the service: uploads decoded (:func:`decode_upload`, through the one
decoder :func:`adah.utils.images.decode_rgb`), thumbnails of indexed image files
(:class:`Thumbnails`), and the attention overlay (:func:`overlay_png`)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from concurrent.futures import Executor

import numpy as np
from starlette.exceptions import HTTPException

from adah.utils.images import DEFAULT_MAX_PIXELS, ImageTooLarge, decode_rgb

THUMBNAIL_SIZES = (16, 512)  # smallest and largest side a thumbnail request may ask for


def decode_upload(data: bytes, max_pixels: int, side: int | None = None):
    """Bytes of an uploaded image file -> RGB PIL image, reduced while decoding to about ``side``
    pixels on its shorter side (None: full size), its file's size in ``info["original_size"]``;
    400 when PIL cannot decode them, 413 when larger than ``max_pixels`` (checked from the
    header, before decoding)."""
    from PIL import UnidentifiedImageError

    try:
        return decode_rgb(data, max_pixels=max_pixels, what="the upload", side=side)
    except ImageTooLarge as exc:
        if not exc.width:
            raise HTTPException(413, f"image too large: over {max_pixels} pixels") from None
        raise HTTPException(413, f"image too large: {exc.width}x{exc.height} = {exc.width * exc.height} pixels; "
                                 f"the limit is {max_pixels}") from None
    except UnidentifiedImageError:
        raise HTTPException(400, "could not decode the upload as an image: not a format PIL reads (JPEG, PNG, "
                                 "GIF, WebP, BMP, TIFF, ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
        raise HTTPException(400, f"could not decode the upload as an image ({type(exc).__name__}: {exc})") from None


class ByteCache:
    """A thread-safe least-recently-used map bounded by the total size of its values in bytes
    (each ``put`` says its value's size); a value larger than the whole bound is not kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.nbytes = max_bytes, 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key):
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            self._items.move_to_end(key)
            return entry[0]

    def put(self, key, value, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.nbytes += nbytes - (old[1] if old else 0)
            self._items[key] = (value, nbytes)
            while self.nbytes > self.max_bytes:
                _, (_, size) = self._items.popitem(last=False)
                self.nbytes -= size


def file_stamp(path: str) -> tuple[int, int]:
    """(modification time in ns, size) of the image file at ``path``; 404 when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        raise HTTPException(404, "the image of this row is gone from the disk") from None
    return st.st_mtime_ns, st.st_size


class Thumbnails:
    """PNG thumbnails of indexed image files. Each file is decoded once (on the service's
    ``decoder`` threads, one thumbnail source at a time), reduced while decoding to the largest
    thumbnail side (:func:`reduced_image`), and every size is cut from that. The PNGs and the
    reduced pictures share one cache of at most ``max_bytes``, keyed by the file's path,
    modification time and size: a file replaced on disk is read again."""

    def __init__(self, max_bytes: int, decoder: Executor) -> None:
        self.cache = ByteCache(max_bytes)
        self.decoder = decoder
        self._source_lock = threading.Lock()

    @staticmethod
    def etag(item_id: str, path: str, size: int) -> str:
        """An HTTP ETag naming the item, its image file's identity (path, time, size) and the
        thumbnail size; 404 when the file is gone."""
        key = "\0".join([item_id, path, *map(str, file_stamp(path)), str(size)])
        return '"' + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32] + '"'

    def png(self, path: str, size: int) -> bytes:
        """The PNG of the image file at ``path``, centre-cropped to ``size`` x ``size``."""
        key = ("png", path, file_stamp(path), size)
        png = self.cache.get(key)
        if png is None:
            png = thumbnail_png(self._source(path, key[2]), size)
            self.cache.put(key, png, len(png))
        return png

    def _source(self, path: str, stamp: tuple[int, int]):
        key = ("source", path, stamp)
        with self._source_lock:  # a second request for the same file waits, then finds it cached
            image = self.cache.get(key)
            if image is None:
                image = self.decoder.submit(reduced_image, path, THUMBNAIL_SIZES[1]).result()
                self.cache.put(key, image, image.width * image.height * 4)  # PIL keeps RGB in 4 bytes a pixel
        return image


def reduced_image(path: str, side: int):
    """The image file at ``path`` decoded to RGB, reduced while decoding to about ``side`` pixels on
    its shorter side (:func:`adah.utils.images.reduced_rgb`) and cut to its centre square (all a
    thumbnail shows): what every thumbnail of it is cut from, so a 10000 x 10000 photo is decoded
    once, not once per size. 404 when it is gone, unreadable or over
    :data:`adah.utils.images.DEFAULT_MAX_PIXELS`."""
    try:
        image = decode_rgb(path, max_pixels=DEFAULT_MAX_PIXELS, what="the image of this row", side=side)
    except ImageTooLarge as exc:
        raise HTTPException(404, f"{str(exc).split(' (option')[0]}: too large to show") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise HTTPException(404, f"the image of this row cannot be read ({type(exc).__name__})") from None
    width, height = image.size
    square = min(width, height)
    left, top = (width - square) // 2, (height - square) // 2
    return image.crop((left, top, left + square, top + square)) if width != height else image


def thumbnail_png(image, size: int) -> bytes:
    """``image`` (RGB) centre-cropped to a square and resized to ``size``, as PNG."""
    from PIL import Image, ImageOps

    square = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    square.save(buf, format="PNG")
    return buf.getvalue()


def overlay_png(image, mask: np.ndarray, max_side: int = 512) -> bytes:
    """``image`` (at most ``max_side`` pixels a side) with the cells outside ``mask`` dimmed and
    those inside tinted red, as PNG bytes."""
    from PIL import Image

    image = image.copy()
    image.thumbnail((max_side, max_side))
    cells = Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.Resampling.NEAREST)
    inside = np.asarray(cells) > 127
    base = np.asarray(image, dtype=np.float32)
    out = base * 0.3
    out[inside] = base[inside] * 0.6 + np.array([255.0, 40.0, 40.0]) * 0.4
    buf = io.BytesIO()
    Image.fromarray(out.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
