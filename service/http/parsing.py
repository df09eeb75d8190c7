"""Request bodies to typed values; anything off is InvalidRequest (400), never a 500."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from ..errors import InvalidRequest, PayloadTooLarge


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge("request body too large")
    try:
        body = await request.content.read(limit + 1)
    except ValueError:
        raise InvalidRequest("unreadable body") from None
    if len(body) > limit:
        raise PayloadTooLarge("request body too large")
    return body


async def form(request: web.Request, limit: int) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict.

    RFC 6749 §3.1: empty values count as absent and a repeated parameter is an error.
    """
    if request.content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    raw = await _body(request, limit)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=64, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the body is not valid UTF-8 form data") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise InvalidRequest(f"parameter {name!r} is repeated")
        if value != "":
            out[name] = value
        else:
            out.setdefault(name, "")
    return {k: v for k, v in out.items() if v != ""}


async def json_object(request: web.Request, limit: int) -> dict[str, Any]:
    """A JSON object body."""
    if request.content_type != "application/json":
        raise InvalidRequest("the body must be application/json")
    raw = await _body(request, limit)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the body must be a JSON object")
    return value


def string(data: Mapping[str, Any], name: str, *, required: bool = False, max_len: int = 256) -> str:
    """A string field, bounded and free of control characters."""
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    if len(value) > max_len:
        raise InvalidRequest(f"{name} is longer than {max_len} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidRequest(f"{name} contains control characters")
    return value


def boolean(data: Mapping[str, Any], name: str) -> bool:
    """A JSON boolean field, default false."""
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false")
    return value


def scope(value: str) -> str:
    """A space-separated scope list in the RFC 6749 §3.3 alphabet, normalised."""
    words = value.split(" ")
    for word in words:
        if not word or any(not (c == "\x21" or "\x23" <= c <= "\x5b" or "\x5d" <= c <= "\x7e") for c in word):
            raise InvalidRequest("scope is malformed")
    return " ".join(dict.fromkeys(words))


def bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
