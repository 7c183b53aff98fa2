"""What one request to ``adah serve`` may ask for, and the bounds on the service's memory
(:class:`Limits`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from adah.errors import AdahError
from adah.utils.images import QUERY_MAX_PIXELS


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (anything over is answered with a 4xx JSON error), and the
    bounds that keep the service's memory bounded under any load:

    - ``max_body_bytes`` (10 MiB): a whole request body (413 above); with the threadpool's 40
      workers, at most 40 bodies are held at once.
    - ``max_image_pixels`` (40,000,000): width x height of an upload, read from its header
      before any pixel is decoded (413 above).
    - ``decode_side`` (512): uploads are decoded reduced to the smallest size with at least this
      many pixels on the shorter side (or the model's input size when larger): JPEGs at 1/2 ..
      1/8 scale while decoding, other formats decoded in their own mode and reduced by an
      integer factor before the RGB conversion. The model reads 224 pixels, the attention
      overlay shows 512.
    - ``max_decodes`` (2): images decoded at the same time, on threads of their own (uploads and
      the pictures thumbnails are cut from); further requests wait their turn. A decode takes at
      most about 4 bytes per pixel of the image (160 MB at the 40-megapixel limit), 2 for a
      1-bit or grey PNG.
    - ``thumbnail_cache_bytes`` (64 MiB): the thumbnail cache (PNGs and the reduced pictures
      they are cut from) holds at most this many bytes; the least recently used go first.
    """

    max_body_bytes: int = 10 * 2**20  # whole request body (413)
    max_k: int = 100  # top-k in 1..max_k (422)
    max_text_chars: int = 1000  # query text length (422)
    max_image_pixels: int = QUERY_MAX_PIXELS  # width * height of an upload, from its header (413)
    default_k: int = 10
    decode_side: int = 512  # uploads decoded reduced to this shorter side (or the model's input size)
    max_decodes: int = 2  # images decoded at once; others wait
    thumbnail_cache_bytes: int = 64 * 2**20  # PNG thumbnails and their reduced sources, in bytes

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AdahError(f"serve limits: {field.name} must be a positive integer, got {value!r}")
        if self.default_k > self.max_k:
            raise AdahError(f"serve limits: default_k={self.default_k} is over max_k={self.max_k}")
