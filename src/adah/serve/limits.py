"""What one request to ``adah serve`` may ask for (:class:`Limits`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from adah.errors import AdahError
from adah.utils.images import QUERY_MAX_PIXELS


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything over is answered with a 4xx JSON error."""

    max_body_bytes: int = 10 * 2**20  # whole request body (413)
    max_k: int = 100  # top-k in 1..max_k (422)
    max_text_chars: int = 1000  # query text length (422)
    max_image_pixels: int = QUERY_MAX_PIXELS  # decoded width * height of an upload (413)
    default_k: int = 10

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AdahError(f"serve limits: {field.name} must be a positive integer, got {value!r}")
        if self.default_k > self.max_k:
            raise AdahError(f"serve limits: default_k={self.default_k} is over max_k={self.max_k}")
