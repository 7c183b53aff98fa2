"""Opening image files with a pixel limit: the one place adah calls ``PIL.Image.open`` on a file
or upload (list-file images, query images, thumbnails).

The size is read from the header and checked before any pixel is decoded: an image of more than
``max_pixels`` (width x height) raises :class:`ImageTooLarge` naming it, and below the limit PIL's
decompression-bomb warning is silenced (the limit replaces it). PIL refuses images over twice its
``Image.MAX_IMAGE_PIXELS`` by itself, so that is the largest limit one can set.
"""

from __future__ import annotations

import contextlib
import warnings

from adah.errors import AdahError

#: default limit for images read from a dataset (uploads to ``adah serve`` have their own, lower one)
DEFAULT_MAX_PIXELS = 100_000_000


class ImageTooLarge(AdahError):
    """An image over the pixel limit (or over PIL's decompression-bomb limit)."""


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
                                f"limit); the limit here is {max_pixels:,}") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{what}: {width}x{height} = {width * height:,} pixels, over the limit of "
                                f"{max_pixels:,} (option max_image_pixels)")
        yield image


def reduced_rgb(image, side: int):
    """``image`` decoded to RGB at the smallest size that still has ``side`` pixels on its shorter
    side: JPEGs are decoded at 1/2 .. 1/8 scale (``draft``), other formats are decoded whole and
    shrunk by an integer factor (``reduce``) before anything else is done with them."""
    image.draft("RGB", (side, side))
    rgb = image.convert("RGB")
    factor = min(rgb.size) // max(1, side)
    return rgb.reduce(factor) if factor >= 2 else rgb
