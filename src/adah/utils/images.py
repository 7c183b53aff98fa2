"""Opening and decoding image files with a pixel limit: the one place adah calls
``PIL.Image.open`` on a file or upload (list-file images, query images, uploads to ``adah
serve``, thumbnails). :func:`open_image` checks the size; :func:`decode_rgb` is the one decoder
(bytes, a path or a file object -> an RGB image, optionally reduced while decoding).

The size is read from the header and checked before any pixel is decoded: an image of more than
``max_pixels`` (width x height) raises :class:`ImageTooLarge` naming it, and below the limit PIL's
decompression-bomb warning is silenced (the limit replaces it). PIL refuses images over twice its
``Image.MAX_IMAGE_PIXELS`` by itself, so that is the largest limit one can set.
"""

from __future__ import annotations

import contextlib
import io
import warnings

from adah.errors import AdahError

#: default limit for images read from a dataset (a data set's option ``max_image_pixels``)
DEFAULT_MAX_PIXELS = 100_000_000
#: default limit for query images: ``Index.search_image`` and uploads to ``adah serve`` (its
#: ``Limits.max_image_pixels``); lower than a data set's, as anyone may send one
QUERY_MAX_PIXELS = 40_000_000


class ImageTooLarge(AdahError):
    """An image over the pixel limit (or over PIL's decompression-bomb limit). ``width`` and
    ``height`` are 0 when PIL refused it before its size was known; ``limit`` is the limit."""

    def __init__(self, message: str, width: int = 0, height: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.width, self.height, self.limit = width, height, limit


def pil_hard_limit() -> int:
    """The most pixels PIL opens at all (twice ``Image.MAX_IMAGE_PIXELS``); 0 when unlimited."""
    from PIL import Image

    return 2 * int(Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else 0


def check_max_pixels(value, source: str = "max_image_pixels") -> int:
    """``value`` when it is a usable pixel limit, else AdahError saying the range."""
    hard = pil_hard_limit()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (hard and value > hard):
        raise AdahError(f"{source} must be an integer in 1..{hard or 'any'} (pixels, width x height), got {value!r}")
    return value


@contextlib.contextmanager
def open_image(source, *, max_pixels: int = DEFAULT_MAX_PIXELS, what: str | None = None):
    """``PIL.Image.open(source)`` (a path or a file object) as a context manager, after checking
    width x height <= ``max_pixels`` from the header; ImageTooLarge naming ``what`` (default:
    the path) otherwise. Decoding errors (OSError, ValueError, ...) are left to the caller, who
    knows the line or request to name."""
    from PIL import Image

    what = what or str(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError:
            raise ImageTooLarge(f"{what}: over {pil_hard_limit():,} pixels, more than PIL opens (decompression-bomb "
                                f"limit); the limit here is {max_pixels:,}", limit=max_pixels) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{what}: {width}x{height} = {width * height:,} pixels, over the limit of "
                                f"{max_pixels:,} (option max_image_pixels)", width, height, max_pixels)
        yield image


def decode_rgb(source, *, max_pixels: int = DEFAULT_MAX_PIXELS, what: str | None = None, side: int | None = None):
    """The image in ``source`` (encoded bytes, a path or a file object) decoded to an RGB PIL
    image, after :func:`open_image`'s pixel check. ``side``: reduce while decoding to the smallest
    size that keeps ``side`` pixels on the shorter side (:func:`reduced_rgb`); None: full size.
    The result's ``info["original_size"]`` is the (width, height) of the file. ImageTooLarge over
    ``max_pixels``; decoding errors (OSError, ValueError, SyntaxError, PIL's
    UnidentifiedImageError) are left to the caller, who knows the request or line to name."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    with open_image(source, max_pixels=max_pixels, what=what) as image:
        width, height = image.size
        if width < 1 or height < 1:
            raise ValueError(f"empty image ({width}x{height})")
        if side is not None:
            rgb = reduced_rgb(image, side)
        else:
            image.load()
            rgb = image.convert("RGB")
    rgb.info["original_size"] = (width, height)
    return rgb


#: modes ``Image.reduce`` averages directly; others are converted first (1-bit to 8-bit grey,
#: palette and 16-bit to RGB), so that a palette's indices are never averaged
_REDUCIBLE = {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "CMYK": "CMYK", "YCbCr": "YCbCr", "I": "I",
              "F": "F", "1": "L"}


def reduced_rgb(image, side: int):
    """``image`` decoded to RGB at the smallest size that still has ``side`` pixels on its shorter
    side. JPEGs are decoded at 1/2 .. 1/8 scale (``draft``): their full size is never in memory.
    Other formats (PNG, ...) are decoded whole in their own mode (1 byte a pixel for 1-bit and
    grey images, 4 for RGB) and shrunk by an integer factor (``reduce``, a box average) before
    the conversion to RGB: a 1-bit or grey image never has a full-size RGB copy (a palette
    image is converted to RGB first, as its indices cannot be averaged)."""
    image.draft("RGB", (side, side))
    factor = min(image.size) // max(1, side)
    if factor < 2:
        return image.convert("RGB")
    mode = _REDUCIBLE.get(image.mode, "RGB")
    work = image if image.mode == mode else image.convert(mode)
    return work.reduce(factor).convert("RGB")
