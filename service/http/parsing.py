"""Request bodies to typed values; anything off is InvalidRequest (400), never a 500."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .. import state
from ..config import Network, Settings
from ..errors import CallerGone, EncodedBody, InvalidRequest, PayloadTooLarge, RequestTimeout, UnreadableBody
from ..ratelimit import IPAddress


async def _body(request: web.Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes, within ``TOKENWARD_CLIENT_TIMEOUT``.

    ``StreamReader.read(n)`` returns what has arrived so far, so a body split over TCP
    segments is read in a loop; aiohttp has no body timeout of its own, hence the deadline.

    A body with a ``Content-Encoding`` is refused before a byte of it is read (415): no
    client of these endpoints compresses a few hundred bytes of form or JSON, and a body
    that is never inflated cannot be a decompression bomb or a broken gzip stream (aiohttp
    is told not to inflate, ``http.protocol.HANDLER_ARGS``), so the cap counts the bytes
    as they are. Broken framing is ``UnreadableBody`` (400, connection closed); a caller
    that hangs up mid-body is ``CallerGone`` (499), never a store outage.
    """
    if any(coding.strip().lower() not in ("", "identity") for coding in _codings(request)):
        raise EncodedBody("compressed request bodies are not accepted; send the body as it is")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge("request body too large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(request.app[state.SETTINGS].client_timeout):
            while size <= limit:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive in time") from None
    except ValueError:
        raise InvalidRequest("unreadable body") from None
    except ConnectionResetError:
        raise CallerGone("the caller closed the connection during the body") from None
    except (web.RequestPayloadError, HttpProcessingError):
        # aiohttp's messages quote the offending bytes: never passed on.
        raise UnreadableBody("the request body's framing is malformed") from None
    if size > limit:
        raise PayloadTooLarge("request body too large")
    return b"".join(chunks)


def _codings(request: web.Request) -> list[str]:
    return [coding for line in request.headers.getall("Content-Encoding", ()) for coding in line.split(",")]


def printable(value: str) -> bool:
    """True when ``value`` holds no control character (C0, DEL)."""
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


async def form(request: web.Request, limit: int) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict.

    RFC 6749 §3.1: empty values count as absent and a repeated parameter is an error.
    No parameter of any OAuth request may hold a control character (NUL included), so
    none ever reaches Redis or a log line.
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
        if not (printable(name) and printable(value)):
            raise InvalidRequest("a parameter contains control characters")
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
    if not printable(value):
        raise InvalidRequest(f"{name} contains control characters")
    return value


def boolean(data: Mapping[str, Any], name: str) -> bool:
    """A JSON boolean field, default false."""
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false")
    return value


#: The longest scope list accepted: far above any real one, and a bound on what a challenge carries.
MAX_SCOPE_CHARS: Final = 1024


def query(request: web.Request, name: str) -> str | None:
    """The query parameter ``name``, or None; InvalidRequest when it is repeated.

    With ``?scope=read&scope=admin`` the first one counted and the second was ignored: which
    value a proxy, a log reader and the service each take must never differ."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"parameter {name!r} is repeated")
    return values[0] if values else None


def scope(value: str) -> str:
    """A space-separated scope list in the RFC 6749 §3.3 alphabet, normalised."""
    if len(value) > MAX_SCOPE_CHARS:
        raise InvalidRequest(f"scope is longer than {MAX_SCOPE_CHARS} characters")
    words = value.split(" ")
    for word in words:
        if not word or any(not (c == "\x21" or "\x23" <= c <= "\x5b" or "\x5d" <= c <= "\x7e") for c in word):
            raise InvalidRequest("scope is malformed")
    return " ".join(dict.fromkeys(words))


def authorization(request: web.Request) -> str | None:
    """The one Authorization header, if any; InvalidRequest for two or more.

    One rule for every scheme: with two headers, which one counts would be left to the
    order a client or a proxy happened to write them in (a valid Bearer first and garbage
    second was allowed, the other order refused).
    """
    values = request.headers.getall("Authorization", [])
    if len(values) > 1:
        raise InvalidRequest("more than one Authorization header")
    return values[0] if values else None


def bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any; InvalidRequest for two headers."""
    header = authorization(request) or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _ip(text: str) -> IPAddress | None:
    """An address as proxies write it (``1.2.3.4``, ``[::1]``, ``1.2.3.4:5678``), IPv4-mapped unwrapped."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_address(request: web.Request, settings: Settings) -> IPAddress | None:
    """Who is calling, for rate limits: the socket peer, unless it is a trusted proxy.

    Behind ``TOKENWARD_TRUSTED_PROXIES`` the ``X-Forwarded-For`` hops are walked right to
    left (each is what the proxy after it saw) until one is not a trusted proxy: entries
    further left were written by the client and are ignored, so a spoofed header cannot
    pick its own bucket. An unparsable hop ends the walk at the proxy that forwarded it.
    None when the peer is not an IP socket.
    """
    peer = _ip(request.remote or "")
    if peer is None or not _trusted(peer, settings.trusted_proxies):
        return peer
    hops = [hop for line in request.headers.getall("X-Forwarded-For", ()) for hop in line.split(",")]
    address = peer
    for hop in reversed(hops):
        found = _ip(hop)
        if found is None:
            break
        address = found
        if not _trusted(found, settings.trusted_proxies):
            break
    return address
