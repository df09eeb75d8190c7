"""The one rule for a user identifier (``sub``), and how it travels in an HTTP header.

A ``sub`` names a user everywhere: in Redis keys, in tokens, in the identity header a
gateway passes upstream. Two different subs must never reach a resource server as the
same value, yet HTTP header values are not a faithful carrier: proxies trim surrounding
whitespace, and control or non-ASCII bytes are passed on, mangled or refused depending on
the hop. So:

* the service accepts at login only a **safe sub** (:func:`check_sub`): 1 to 255 bytes of
  UTF-8, NFC-normalised, no leading or trailing whitespace, no control characters (C0,
  DEL, C1), no format characters (bidi overrides and isolates, zero-width characters,
  the BOM), no line or paragraph separators, no surrogates, not ``.`` or ``..`` (URL
  normalisation removes those from a path). Anything else a JSON string holds is allowed,
  ``/``, ``%``, ``{}``, inner spaces and non-ASCII letters included, and every endpoint
  that takes a sub in its path reads it percent-encoded;
* a sub travels in a header **percent-encoded** (:func:`encode_header`): its UTF-8 bytes,
  every one but RFC 3986's unreserved characters (``A-Z a-z 0-9 - . _ ~``) written
  ``%XX``. The value is plain ASCII with no space, which every proxy passes unchanged, and
  :func:`decode_header` gives back the exact sub. An ordinary identifier such as
  ``alice-01`` is its own encoding.

The server imports this module (the SDK imports nothing from the server): both apply the
same rule.
"""

from __future__ import annotations

import unicodedata
from typing import Final
from urllib.parse import quote, unquote

#: The longest sub, in bytes of UTF-8 (its header form is at most three times as long).
MAX_SUB_BYTES: Final = 255
# Unicode categories a sub may not contain: Cc (C0, DEL, C1), Cf (format: bidi, zero
# width, BOM), Cs (surrogates), Zl and Zp (line and paragraph separators).
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class UnsafeSub(ValueError):
    """The sub cannot name a user unambiguously; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_sub(sub: str) -> str:
    """``sub`` itself when it is a safe identifier (see the module docstring), else UnsafeSub."""
    if not sub:
        raise UnsafeSub("sub must not be empty")
    try:
        size = len(sub.encode())
    except UnicodeEncodeError:  # a lone surrogate
        raise UnsafeSub("sub must be valid Unicode") from None
    if size > MAX_SUB_BYTES:
        raise UnsafeSub(f"sub must be at most {MAX_SUB_BYTES} bytes of UTF-8")
    if sub != sub.strip():
        raise UnsafeSub("sub must not begin or end with whitespace")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in sub):
        raise UnsafeSub("sub must not contain control, format or separator characters")
    if not unicodedata.is_normalized("NFC", sub):
        raise UnsafeSub("sub must be NFC-normalised Unicode")
    if sub in (".", ".."):
        # A dot segment: URL normalisation removes it from /v1/users/{sub}/sessions.
        raise UnsafeSub("sub must not be . or ..")
    return sub


def is_safe_sub(sub: str) -> bool:
    """True when :func:`check_sub` accepts ``sub``."""
    try:
        check_sub(sub)
    except UnsafeSub:
        return False
    return True


def encode_header(sub: str) -> str:
    """The header form of a sub: UTF-8, percent-encoded except RFC 3986 unreserved characters."""
    return quote(sub, safe="", encoding="utf-8", errors="strict")


def decode_header(value: str) -> str:
    """The sub a header value (from :func:`encode_header`) carries; UnsafeSub if it is not one."""
    if any(not (c.isascii() and c.isprintable()) or c == " " for c in value):
        raise UnsafeSub("an identity header value is percent-encoded ASCII")
    try:
        sub = unquote(value, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise UnsafeSub("an identity header value must decode to UTF-8") from None
    if encode_header(sub) != value:
        # One sub, one header form: %2f for %2F, or an unreserved character encoded.
        raise UnsafeSub("an identity header value must be in its canonical form")
    return sub


__all__ = ["MAX_SUB_BYTES", "UnsafeSub", "check_sub", "decode_header", "encode_header", "is_safe_sub"]
