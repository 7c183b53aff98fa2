"""Checks on what a request sends: content type, JSON body, query text, ``k``, ``target``, and
the uploaded image's bytes (decoded by :meth:`adah.serve.routes.Service.decode`). Each failure
is an HTTPException with the 4xx status and a message naming the field."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from adah.index.core import TARGETS
from adah.serve.limits import Limits

TEXT_FIELDS = ("text", "k", "target")
IMAGE_FIELD = "image"


def require_type(request: Request, allowed: tuple[str, ...], what: str) -> str:
    """The request's media type when it starts with one of ``allowed``, else 415."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not any(media == a or (a.endswith("/") and media.startswith(a)) for a in allowed):
        raise HTTPException(415, f"Content-Type {media or '(none)'!r} not accepted; send {what}")
    return media


def parse_json_object(body: bytes) -> dict:
    if not body.strip():
        raise HTTPException(400, "empty request body: send JSON {\"text\": ..., \"k\": 10, \"target\": \"image\"}")
    try:
        payload = json.loads(body)
    except RecursionError:
        raise HTTPException(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of thousands of digits
        raise HTTPException(400, f"request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise HTTPException(400, f"request body must be a JSON object, got {type(payload).__name__}")
    return payload


def text_query(payload: dict, limits: Limits) -> tuple[str, int, str]:
    """(text, k, target) of a text-search body, every field checked."""
    unknown = sorted(set(payload) - set(TEXT_FIELDS))
    if unknown:
        raise HTTPException(422, f"unknown field(s) {unknown}; expected {list(TEXT_FIELDS)}")
    text = check_text(payload.get("text"), limits)
    return text, check_k(payload.get("k", limits.default_k), limits), check_target(payload.get("target", "image"))


def check_text(text, limits: Limits) -> str:
    if text is None:
        raise HTTPException(422, "missing field 'text'")
    if not isinstance(text, str):
        raise HTTPException(422, f"'text' must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (\ud800) is valid JSON but not text
        raise HTTPException(400, f"'text' is not valid Unicode: a lone surrogate at position {exc.start}") from None
    text = text.strip()
    if not text:
        raise HTTPException(400, "empty query text")
    if len(text) > limits.max_text_chars:
        raise HTTPException(422, f"query text is {len(text)} characters; the limit is {limits.max_text_chars}")
    return text


def check_k(k, limits: Limits) -> int:
    if isinstance(k, str):
        try:
            k = int(k.strip())
        except ValueError:
            raise HTTPException(422, f"k must be an integer in 1..{limits.max_k}, got {_short(k)}") from None
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limits.max_k:
        raise HTTPException(422, f"k must be an integer in 1..{limits.max_k}, got {_short(k)}")
    return k


def _short(value, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (an echoed 5,000-digit k stays short)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_target(target) -> str:
    if not isinstance(target, str) or target not in TARGETS:
        raise HTTPException(422, f"target must be one of {list(TARGETS)}, got {_short(target)}")
    return target


@dataclass
class Upload:
    data: bytes  # the image file, not decoded yet
    filename: str | None
    params: dict[str, str]  # query parameters, overridden by form fields


async def read_upload(request: Request) -> Upload:
    """The uploaded image file (multipart field ``image``, or a raw ``image/*`` body)."""
    media = require_type(request, ("multipart/form-data", "image/"),
                         f"multipart/form-data with a file field '{IMAGE_FIELD}', or the image bytes as image/*")
    params = dict(request.query_params)
    filename = None
    if media == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=16)
        try:
            part = form.get(IMAGE_FIELD)
            if not isinstance(part, UploadFile):
                raise HTTPException(400, f"no file in the form field '{IMAGE_FIELD}'")
            params.update({key: value for key, value in form.items() if isinstance(value, str)})
            data, filename = await part.read(), part.filename
        finally:
            await form.close()
    else:
        data = await request.body()
    if not data:
        raise HTTPException(400, "empty upload: the image has 0 bytes")
    return Upload(data, filename, params)
