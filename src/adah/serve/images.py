"""Pictures in and out of the service: uploads decoded (:func:`decode_upload`, through the one
decoder :func:`adah.utils.images.decode_rgb`), thumbnails of indexed image files
(:class:`Thumbnails`), and the attention overlay (:func:`overlay_png`)."""

from __future__ import annotations

import io
import threading
from functools import lru_cache

import numpy as np
from starlette.exceptions import HTTPException

from adah.utils.images import DEFAULT_MAX_PIXELS, ImageTooLarge, decode_rgb

THUMBNAIL_SIZES = (16, 512)  # smallest and largest side a thumbnail request may ask for


def decode_upload(data: bytes, max_pixels: int):
    """Bytes of an uploaded image file -> RGB PIL image; 400 when PIL cannot decode them, 413 when
    larger than ``max_pixels`` (checked from the header, before decoding)."""
    from PIL import UnidentifiedImageError

    try:
        return decode_rgb(data, max_pixels=max_pixels, what="the upload")
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


class Thumbnails:
    """PNG thumbnails of indexed image files. Each file is decoded once, reduced while decoding
    to the largest thumbnail side (:func:`reduced_image`), and every size is cut from that;
    both steps are cached, and one image is decoded at a time: memory stays bounded under load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._source = lru_cache(maxsize=64)(lambda path: reduced_image(path, THUMBNAIL_SIZES[1]))
        self._png = lru_cache(maxsize=4096)(lambda path, size: thumbnail_png(self._source(path), size))

    def of(self, index, row: int, size: int) -> bytes:
        """The PNG of ``index``'s row ``row`` at ``size`` x ``size``; 404 when it has no image file."""
        path = index.item(row).get("image_path")
        if not path:
            raise HTTPException(404, f"row {row} has no image file to show")
        with self._lock:
            return self._png(path, size)  # keyed by path: an index that grows keeps its cache


def reduced_image(path: str, side: int):
    """The image file at ``path`` decoded to RGB, reduced while decoding to about ``side`` pixels on
    its shorter side (:func:`adah.utils.images.reduced_rgb`): what every thumbnail of it is cut from, so
    a 10000 x 10000 photo is decoded once, not once per size. 404 when it is gone, unreadable or
    over :data:`adah.utils.images.DEFAULT_MAX_PIXELS`."""
    try:
        return decode_rgb(path, max_pixels=DEFAULT_MAX_PIXELS, what="the image of this row", side=side)
    except ImageTooLarge as exc:
        raise HTTPException(404, f"{str(exc).split(' (option')[0]}: too large to show") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise HTTPException(404, f"the image of this row cannot be read ({type(exc).__name__})") from None


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
