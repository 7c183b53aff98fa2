"""Query encoding: what turns a text or an image query into a binary code with an index's model
(:class:`QueryEncoder`), and :func:`decode_image`, which reads a query image like the indexed ones.

Query problems (empty text, unknown words, an unreadable image) raise :class:`QueryError` and
its subclasses: ``ValueError`` subclasses with one-line messages.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adah.data.vocab import Vocabulary, tokenize
from adah.errors import AdahError
from adah.models import binarize
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


class QueryEncoder:
    """Turns a query into a (1, bits) int8 +-1 code with an index's model: a text through the
    model's text reader (the saved vocabulary for ``bow_mlp``, the offline MiniLM for
    ``minilm``; made on the first text query), an image through its image branch. A text query
    never touches the image branch, so a model loaded with ``lazy_image=True`` (as
    :meth:`Index.load` does) never builds its image backbone for one. ``config``: the
    checkpoint's config as the index manifest stores it (``model.text_encoder``,
    ``data.options``); ``image_resize``: how the indexed images were resized (``stretch`` or
    ``center_crop``), the same for query images. ``model`` None: every query is refused."""

    def __init__(self, model=None, *, vocabulary: Vocabulary | None = None, config: dict | None = None,
                 device: str | torch.device = "cpu", image_resize: str = "stretch") -> None:
        self.model = model
        self.vocabulary = vocabulary
        self.config = config or {}
        self.device = torch.device(device)
        self.image_resize = image_resize

    @property
    def text_reader(self):
        """What turns query text into the model's text input; None when the model has none."""
        if not hasattr(self, "_text_reader"):
            from adah.models.text_encoders import get_text_encoder

            name = (self.config.get("model") or {}).get("text_encoder", "bow_mlp")
            self._text_reader = get_text_encoder(name).reader(self.config.get("model"), self.vocabulary,
                                                              (self.config.get("data") or {}).get("options"))
        return self._text_reader

    @property
    def image_size(self) -> int | None:
        """The side query images are resized to (None without an image branch or for feature vectors)."""
        if self.model is None or not self.model.has_image_branch:
            return None
        return int(getattr(self.model.image.backbone, "input_size", 0)) or None

    def need_model(self) -> None:
        if self.model is None:
            raise QueryError("this index was opened without its model (model=None); only search_codes works")

    # ----------------------------------------------------------------------- text
    def tokens(self, text: str) -> tuple[list[str], list[str]]:
        """(known, unknown) tokens of ``text`` under the model's vocabulary, each once, in order."""
        if not isinstance(text, str):
            raise QueryError(f"a text query must be a string, got {type(text).__name__}")
        if not text.strip():
            raise QueryError("empty text query")
        if self.vocabulary is None and self.text_reader is not None:  # a sentence encoder (minilm)
            known, unknown = self.text_reader.tokens(text)
            return list(dict.fromkeys(known)), list(dict.fromkeys(unknown))
        if self.vocabulary is None:
            raise QueryError("this index's model has no text vocabulary (its training data had no words, e.g. Wiki's "
                             "LDA topics or DCMH tag vectors), so it cannot read text queries")
        tokens = list(dict.fromkeys(tokenize(text, self.vocabulary.tokenizer, self.vocabulary.ngram)))
        known = [t for t in tokens if t in self.vocabulary]
        unknown = [t for t in tokens if t not in self.vocabulary]
        return known, unknown

    def encode_text(self, text: str) -> np.ndarray:
        """(1, bits) int8 +-1 code of a text query; UnknownWordsError when no token is known."""
        known, unknown = self.tokens(text)
        if not known:
            shown = ", ".join(repr(t) for t in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
            size = f" of {len(self.vocabulary):,} tokens" if self.vocabulary is not None else ""
            raise UnknownWordsError(f"no word of the query is in the model's vocabulary{size} "
                                    f"(unknown: {shown or 'none'}); try other words", words=unknown)
        self.need_model()
        inputs, _ = self.text_reader.encode([text])
        with torch.no_grad():
            return binarize(self.model.encode_text(inputs.to(self.device))).cpu().numpy()

    def text_attention(self, text: str) -> list[dict]:
        """The words of ``text`` with the text attention's verdict: ``[{"word", "kept", "weight"}]``.
        QueryError for a model without attention over words (see :func:`check_word_attention`)."""
        from adah.models.text_encoders import words_of

        self.need_model()
        self.tokens(text)
        check_word_attention(self.model)
        inputs, pieces = self.text_reader.encode([text])
        with torch.no_grad():
            att = self.model.text.attend(inputs.to(self.device))
        n = len(pieces[0])
        return words_of(pieces[0], att.mask[0, :n].cpu().numpy(), att.probs[0, :n].float().cpu().numpy())

    # ----------------------------------------------------------------------- images
    def image_input(self, image, *, max_pixels: int | None = None) -> torch.Tensor:
        """The model's (1, ...) input for a query image (see :meth:`Index.search_image` for
        what ``image`` may be); ``max_pixels``: the decoded size limit (default
        :data:`MAX_IMAGE_PIXELS`)."""
        self.need_model()
        if not self.model.has_image_branch:
            raise QueryError("this index's model was trained on text only; it cannot encode a query image")
        backbone = self.model.image.backbone
        if not backbone.spatial:  # feature vectors (mlp): the caller brings the features
            arr = np.asarray(image) if isinstance(image, (np.ndarray, list, tuple)) else None
            if arr is None or arr.dtype.kind not in "fiu" or arr.size != backbone.in_dim:
                raise QueryError(f"this model reads {backbone.in_dim}-d image feature vectors, not image files; pass "
                                 "the query image's features as a float vector")
            return torch.from_numpy(arr.astype(np.float32).reshape(1, -1)).to(self.device)
        pixels = decode_image(image, int(backbone.input_size), resize=self.image_resize, max_pixels=max_pixels)
        return torch.from_numpy(pixels[None]).to(self.device)

    def encode_image(self, image, *, attention: bool = False,
                     max_pixels: int | None = None) -> tuple[np.ndarray, AttentionMap | None]:
        """(1, bits) int8 +-1 code of a query image, and with ``attention`` its attention map
        (None for a mask over channels or feature vectors)."""
        tensor = self.image_input(image, max_pixels=max_pixels)
        with torch.no_grad():
            codes = binarize(self.model.encode_image(tensor)).cpu().numpy()
        return codes, (self._attention_map(tensor) if attention else None)

    def image_attention(self, image, *, max_pixels: int | None = None) -> AttentionMap | None:
        """The attention mask G puts on ``image`` (None for feature-vector backbones and for a
        mask over channels, which has no place on the photo)."""
        return self._attention_map(self.image_input(image, max_pixels=max_pixels))

    def _attention_map(self, tensor: torch.Tensor) -> AttentionMap | None:
        if not self.model.image.spatial_mask:
            return None
        with torch.no_grad():
            out = self.model.image.attend(tensor)
        return AttentionMap(out.mask[0, 0].cpu().numpy().astype(np.uint8), out.probs[0, 0].float().cpu().numpy(),
                            int(self.image_size or 0))


def check_word_attention(model) -> None:
    """QueryError unless ``model`` has a text attention over words (a word-level text encoder
    such as ``minilm``, trained with text attention): bow_mlp attends over MLP units."""
    if not hasattr(model.text, "attend") or model.cfg.text_encoder == "bow_mlp":
        raise QueryError("this index's model attends over hidden units of a bag-of-words MLP (bow_mlp), not over "
                         "words; train with model.text_encoder='minilm' to see which words it keeps")
    if not model.cfg.text_attention:
        raise QueryError(f"this index's model has no text attention (model.attention="
                         f"{model.cfg.attention!r}): every word counts; train with --attention text or both "
                         "to see which words G keeps")
