"""service/logs.py's redaction step: every record shape, both formatters, every secret kind, whole or in part.

The secrets are real-looking: a refresh token in this service's format, a signed JWT, a client
secret inside Basic credentials, cookie values and credential parameters. Each record shape puts
them where a library would: the message, its %-arguments, a traceback, ``exc_text``, a stack,
fields (nested too), bytes reprs as aiohttp's parser errors quote them, truncated fragments.
"""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Callable

import pytest

from service.http.edge import QUERY_CREDENTIALS
from service.logs import CREDENTIAL_NAMES, JsonFormatter, TextFormatter, redact

REFRESH = "twr_00W-uIWThDEUe-33_LpowHXQ.3.arVqguk4ovdjCViOXVaZHVGVl8inyoXh.c4b86270b0a194cd"
JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QtMSJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc5NjY5MTk0NX0."
    "QnV0IHRoZSBzaWduYXR1cmUgaXMgYWxzbyBhIHNlY3JldCB0byBrZWVw"
)
CLIENT_SECRET = "login-secret-0123456789abcdef"
BASIC = base64.b64encode(f"login:{CLIENT_SECRET}".encode()).decode()
COOKIE_VALUE = "prefs-SECRETCOOKIEVALUE-42"
SECRETS = {"refresh": REFRESH, "jwt": JWT, "client secret": CLIENT_SECRET, "basic": BASIC, "cookie": COOKIE_VALUE}


def fragments(secret: str, size: int = 12) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def assert_clean(text: str) -> None:
    for name, secret in SECRETS.items():
        found = [f for f in fragments(secret) if f in text]
        assert not found, f"{name} fragment {found[0]!r} in {text!r}"


# Texts as libraries and our code write them, each carrying a secret whole or in part.
TEXTS = [
    f"Cookie: session=abc; __Secure-tokenward-refresh={REFRESH}; theme={COOKIE_VALUE}",
    f"set-cookie: __Host-session={COOKIE_VALUE}; Path=/; Secure",
    f"b'__Secure-tokenward-refresh={REFRESH[:40]}...'",  # aiohttp's LineTooLong: the first 100 bytes
    f"Invalid HTTP header: b'__Secure-tokenward-refresh={REFRESH}\\x01'",  # InvalidHeader's repr
    f"Got more than 16384 bytes when reading: b'Basic {BASIC}AAAA...'",
    f"Authorization: Basic {BASIC}",
    f"authorization: basic {BASIC[:20]}",
    f"Authorization: Bearer {JWT}",
    f"token {JWT[:30]}",  # a truncated JWT without its scheme
    f"payload {JWT.split('.')[1]} seen",  # one segment of a JWT
    f"GET /v1/me/sessions?access_token={JWT}&x=1",
    f"POST /oauth/token?refresh_token={REFRESH}",
    f"grant_type=refresh_token&refresh_token={REFRESH}&client_secret={CLIENT_SECRET}",
    f"client_id=login&client_secret={CLIENT_SECRET}",
    f"token={REFRESH[:25]}",
    f"password={CLIENT_SECRET}",
    f"token: {CLIENT_SECRET}",
    f"while refreshing token:{CLIENT_SECRET}",
    f'{{"refresh_token": "{REFRESH}", "access_token":"{JWT}"}}',
    f"{{'client_secret': '{CLIENT_SECRET}'}}",
    f"redis: EVALSHA abc 1 tw:0:s:x {REFRESH}",
    f"a refresh token mid-sentence: {REFRESH}, then more",
    f"(twr_{REFRESH[4:30]})",
]


@pytest.mark.parametrize("text", TEXTS)
def test_redact_removes_every_secret_whole_or_in_part(text: str) -> None:
    out = redact(text)
    assert_clean(out)
    assert "[redacted]" in out


def test_redact_keeps_ordinary_text() -> None:
    for text in ("request", "client:login", "POST /oauth/token 400", "tokens issued: 3", "cookie mode on", "keyJar"):
        assert redact(text) == text
    # A path ending in a credential's name, then the exception class (the store-outage warning).
    for text in ("store unavailable on POST /oauth/token: ConnectionError", "on /oauth/token:TimeoutError"):
        assert redact(text) == text


def test_every_refused_query_credential_is_also_redacted() -> None:
    assert set(QUERY_CREDENTIALS) <= set(CREDENTIAL_NAMES)
    for name in QUERY_CREDENTIALS:
        assert redact(f"?{name}={CLIENT_SECRET}") == f"?{name}=[redacted]"


def _raise_with(secret_text: str) -> logging.LogRecord:
    try:
        raise ValueError(secret_text)
    except ValueError:
        return logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (), sys.exc_info()
        )


RecordFactory = Callable[[], logging.LogRecord]
RECORDS: dict[str, RecordFactory] = {
    "message": lambda: logging.LogRecord("x", logging.INFO, __file__, 1, f"cookie: a={COOKIE_VALUE}", (), None),
    "%-arguments": lambda: logging.LogRecord(
        "x", logging.INFO, __file__, 1, "got %s and %r", (REFRESH, f"Basic {BASIC}"), None
    ),
    "traceback": lambda: _raise_with(f"Invalid HTTP header: b'__Secure-tokenward-refresh={REFRESH}\\x01'"),
    "traceback with a JWT": lambda: _raise_with(f"bad token {JWT}"),
    "fields": lambda: _with_fields({"header": f"Bearer {JWT}", "nested": {"q": f"password={CLIENT_SECRET}"}}),
    "fields, list and bytes": lambda: _with_fields({"seen": [REFRESH, f"refresh_token={REFRESH}".encode()]}),
    "exc_text only": lambda: _with_exc_text(f"Traceback: client_secret={CLIENT_SECRET}"),
    "stack_info": lambda: _with_stack(f"  File x, line 1, in f\n    send(Cookie: theme={COOKIE_VALUE})"),
    "non-string argument": lambda: logging.LogRecord(
        "x", logging.INFO, __file__, 1, "%s", ({"refresh_token": REFRESH},), None
    ),
}


def _with_fields(fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("tokenward.x", logging.INFO, __file__, 1, "request", (), None)
    record.fields = fields
    return record


def _with_exc_text(text: str) -> logging.LogRecord:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
    record.exc_text = text
    return record


def _with_stack(text: str) -> logging.LogRecord:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
    record.stack_info = text
    return record


@pytest.mark.parametrize("formatter", [JsonFormatter, TextFormatter], ids=["json", "text"])
@pytest.mark.parametrize("shape", RECORDS)
def test_both_formatters_redact_every_record_shape(formatter: type[logging.Formatter], shape: str) -> None:
    line = formatter().format(RECORDS[shape]())
    assert_clean(line)
    assert "[redacted]" in line


def test_json_lines_stay_json_after_redaction() -> None:
    import orjson

    line = JsonFormatter().format(_with_fields({"h": f'"quoted" Cookie: x={COOKIE_VALUE}"\\', "n": 3}))
    parsed = orjson.loads(line)
    assert parsed["n"] == 3 and "[redacted]" in parsed["h"]
