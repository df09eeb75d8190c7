"""Tokenward SDK for resource servers: verify access tokens and honour revocations locally.

A separate wing of the package: it imports nothing from the rest of ``service`` (the
service imports its wire schema from here, never the reverse) and depends only on
redis, PyJWT[crypto], orjson and aiohttp. Typical use::

    cache = DenyCache()
    listener = RevocationListener(redis_url, cache)
    await listener.start()
    jwks = JWKSClient(f"{tokenward_url}/.well-known/jwks.json")
    verifier = Verifier(jwks, issuer=issuer, audience=audience, cache=cache)
    app = web.Application(middlewares=[aiohttp_middleware(verifier, listener=listener)])

The event wire format is documented in ``docs/events.md``.
"""

from .cache import DenyCache
from .events import (
    CHANNEL,
    WIRE_VERSION,
    Event,
    EventFormatError,
    UnsupportedEvent,
    parse_event,
)
from .jwks import JWKSClient, JWKSUnavailable, KeySource, VerificationKey
from .listener import RevocationListener
from .middleware import ASGI_STATE_KEY, CLAIMS, ASGIMiddleware, StalePolicy, aiohttp_middleware
from .verifier import Claims, InvalidToken, RevokedToken, Verifier

__all__ = [
    "ASGI_STATE_KEY",
    "CHANNEL",
    "CLAIMS",
    "WIRE_VERSION",
    "ASGIMiddleware",
    "Claims",
    "DenyCache",
    "Event",
    "EventFormatError",
    "InvalidToken",
    "JWKSClient",
    "JWKSUnavailable",
    "KeySource",
    "RevocationListener",
    "RevokedToken",
    "StalePolicy",
    "UnsupportedEvent",
    "VerificationKey",
    "Verifier",
    "aiohttp_middleware",
    "parse_event",
]
