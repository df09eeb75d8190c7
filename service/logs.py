"""Structured logs: the standard library's ``logging`` with one JSON formatter (orjson).

Why not structlog: every library in the process (aiohttp, redis-py, the SDK) already
logs through ``logging``; a formatter on the root handler makes all of their lines JSON
too, with no second pipeline to configure and no new dependency. orjson is already here.

Every line is one JSON object: ``ts`` (RFC 3339, UTC, ms), ``level``, ``logger``, ``msg``,
the fields a call passes in ``extra={"fields": {...}}``, and, inside a request, the
request's context (``request_id``, ``caller``) so audit lines carry who asked.

The request context is a ``ContextVar`` holding a dict the request middleware creates;
handlers and domain code add to it with ``annotate`` (the caller once authenticated, the
outcome of a refresh), and the access line at the end of the request reads it back.
aiohttp runs each request in its own task, so contexts never mix.

Nothing here is given a token on purpose (callers are client ids or subs, never credentials),
but other code's lines are not ours to vouch for: aiohttp quotes request bytes, redis-py
quotes commands, a traceback quotes whatever an exception said. So every record, from any
logger, passes one redaction step (``redact``) in both formatters, over the message, its
arguments, the traceback and every field: refresh tokens (``twr_...``), JWTs (``eyJ...``),
``Basic``/``Bearer`` credentials, ``Cookie``/``Set-Cookie`` values and ``__Host-``/``__Secure-``
cookie values, and credential parameters (``access_token=``, ``client_secret=``, ``password=``,
JSON ``"refresh_token": "..."``, ...) are replaced by ``[redacted]``, whole or in part: each
pattern needs only the start of its secret, so a truncated quote is caught too.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any, Final

import orjson

FORMATS: Final = ("json", "text")
REDACTED: Final = "[redacted]"
#: Parameter names whose values are credentials wherever they appear (query, form, JSON, text).
CREDENTIAL_NAMES: Final = (
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "client_secret",
    "client_assertion",
    "password",
    "secret",
    "code_verifier",
)
_NAMES = "|".join(CREDENTIAL_NAMES)
# Each alternative keeps its lead-in (group 1) and replaces what follows. Token characters are
# broad on purpose (base64, base64url, percent-escapes): over-redacting costs a log reader a
# little; under-redacting leaks a credential.
_SECRET_RE: Final = re.compile(
    # The lookahead (every alternative's possible first characters) skips most positions at
    # once: about half the cost on the short strings of an access line (~1 us each).
    r"(?i)(?=[cs_abrtipe])(?:"
    # Cookie and Set-Cookie header values, to the end of the line (a quoted header ends at a quote).
    r"((?:set-)?cookie\s*[:=]\s*)[^\r\n'\"]+"
    # Authorization schemes: Basic (client id and secret), Bearer (an access token).
    r"|(\b(?:basic|bearer)\s+)[A-Za-z0-9+/=._~%-]+"
    # Prefixed cookies (ours: __Secure-tokenward-refresh) wherever they are quoted.
    r"|(\b__(?:secure|host)-[A-Za-z0-9_.-]*=)[^;,\s'\"]+"
    # name=value and "name": "value" credentials.
    r"|(\b(?:" + _NAMES + r")\s*=\s*)[^&;,\s'\"]+"
    # Not after "/": "on POST /oauth/token: ConnectionError" names a path, not a credential.
    r"|((?<!/)\b(?:" + _NAMES + r")[\"']?\s*:\s*[\"']?)[^\"',}\s]+"
    # Refresh tokens and JWTs anywhere, by their prefixes: whole tokens and any truncation of one.
    r"|()(?-i:(?<![A-Za-z0-9])twr_[A-Za-z0-9_.~+/=%-]*)"
    r"|()(?-i:(?<![A-Za-z0-9])eyJ[A-Za-z0-9_=%-]*(?:\.[A-Za-z0-9_=%-]*)*))"
)


def _keep_lead_in(match: re.Match[str]) -> str:
    lead = next((g for g in match.groups() if g is not None), "")
    return lead + REDACTED


def redact(text: str) -> str:
    """``text`` with every credential it quotes, whole or a fragment, replaced by ``[redacted]``."""
    # Every pattern needs one of these words (lower-cased), a credential name also a "=" or ":",
    # and most strings of a line (a method, a route, a request id) have none: a few substring
    # tests (~0.2 us) instead of the regex (~2 us a string, ~20 us an access line).
    low = text.lower()
    if not (
        "twr_" in low
        or "eyj" in low
        or "basic" in low
        or "bearer" in low
        or "cookie" in low
        or "__secure-" in low
        or "__host-" in low
        or (
            ("=" in text or ":" in text)
            and ("token" in low or "secret" in low or "password" in low or "assertion" in low or "verifier" in low)
        )
    ):
        return text
    return _SECRET_RE.sub(_keep_lead_in, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


_context: ContextVar[dict[str, Any] | None] = ContextVar("tokenward_request", default=None)
audit_log = logging.getLogger("tokenward.audit")


def begin_request(request_id: str) -> tuple[dict[str, Any], Any]:
    """Open a request's log context; returns it and the token to end it with."""
    ctx: dict[str, Any] = {"request_id": request_id}
    return ctx, _context.set(ctx)


def end_request(token: Any) -> None:
    """Close the request's log context."""
    _context.reset(token)


def annotate(**fields: Any) -> None:
    """Add fields to the current request's context (no-op outside a request)."""
    ctx = _context.get()
    if ctx is not None:
        ctx.update(fields)


def current() -> dict[str, Any] | None:
    """The current request's context, if any."""
    return _context.get()


def set_caller(kind: str, name: str, *, unless_known: bool = False) -> None:
    """Record who is calling: ``client:<id>`` or ``user:<sub>`` (never a credential).

    ``unless_known``: keep an authenticated client already recorded (a refresh through a
    confidential client names the client; a public one, the token's user).
    """
    ctx = _context.get()
    if ctx is not None and not (unless_known and "caller" in ctx):
        ctx["caller"] = f"{kind}:{name}"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ctx = _context.get()
    if ctx is not None:
        out["request_id"] = ctx["request_id"]
        if "caller" in ctx:
            out["caller"] = ctx["caller"]
    extra = record.__dict__.get("fields")
    if isinstance(extra, dict):
        out.update(extra)
    return {k: _redact_value(v) for k, v in out.items()}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        second = int(record.created)
        if second != self._second:  # strftime once per second, not once per line
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line: dict[str, Any] = {
            "ts": f"{self._prefix}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-friendly lines for development, the same fields as ``key=value`` after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as text, message and traceback redacted (fields are, in ``_fields``)."""
        base = redact(super().format(record))
        fields = _fields(record)
        if not fields:
            return base
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        head, sep, tail = base.partition("\n")  # keep a traceback below the fields
        return f"{head} {extra}{sep}{tail}"


def configure(level: str, fmt: str) -> None:
    """Send every logger's lines to stderr in ``fmt`` (``json`` or ``text``) from ``level`` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings go through the handler, and its redaction, too
    # The logging HOWTO's "Optimization" switches: no formatter here prints the caller's
    # file/line, thread, process or task, and finding the caller walks the stack on every
    # record (about 60% of a record's cost without them: ~12 us -> ~5 us per line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def audit_revocation(kind: str, ident: str, reason: str, **fields: Any) -> None:
    """One audit line per acknowledged revocation: who (the request's caller), what, why.

    ``kind`` is jti, session or user; ``ident`` the jti, sid or sub (identifiers, never
    tokens); ``reason`` the recorded reason. The caller and request id come from the
    request context; a revocation the service decides itself (reuse detection) says so
    in ``reason``.
    """
    ctx = _context.get()
    by = (ctx or {}).get("caller", "anonymous token holder" if ctx is not None else "service")
    audit_log.info(
        "revocation",
        extra={"fields": {"event": "revocation", "by": by, "kind": kind, "id": ident, "reason": reason, **fields}},
    )
