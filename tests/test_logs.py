"""service/logs.py: one JSON object per line, request context on every line of a request."""

from __future__ import annotations

import logging

from service import logs
from service.logs import JsonFormatter, TextFormatter
from tests.support.logcapture import captured


def test_every_line_is_one_json_object_with_the_base_fields() -> None:
    with captured() as lines:
        logging.getLogger("tokenward.x").warning("hello %s", "world", extra={"fields": {"n": 1, "b": b"x"}})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("tokenward.x").exception("failed")
    first, second = lines.json()
    assert first["level"] == "WARNING" and first["logger"] == "tokenward.x" and first["msg"] == "hello world"
    assert first["n"] == 1 and first["b"] == "b'x'" and first["ts"].endswith("Z")
    assert "ValueError: boom" in second["exc"] and "\n" not in lines.lines[1]


def test_request_context_reaches_every_line_and_ends_with_the_request() -> None:
    with captured() as lines:
        _, token = logs.begin_request("rid-1")
        logs.set_caller("client", "gw")
        logs.set_caller("user", "ann", unless_known=True)
        logging.getLogger("tokenward.y").info("inside")
        logs.end_request(token)
        logging.getLogger("tokenward.y").info("outside")
        logs.annotate(ignored=True)  # no request: nothing to annotate, no error
    inside, outside = lines.json()
    assert inside["request_id"] == "rid-1" and inside["caller"] == "client:gw"
    assert "request_id" not in outside and "caller" not in outside


def test_audit_outside_a_request_is_by_the_service() -> None:
    with captured() as lines:
        logs.audit_revocation("user", "bob", "admin", sessions_ended=2)
    (line,) = lines.json()
    expected = {"logger": "tokenward.audit", "by": "service", "kind": "user", "id": "bob", "sessions_ended": 2}
    assert line == {**line, **expected}


def test_text_format_keeps_the_fields() -> None:
    with captured(TextFormatter()) as lines:
        _, token = logs.begin_request("rid-2")
        logging.getLogger("tokenward.z").info("hi", extra={"fields": {"route": "/x"}})
        logs.end_request(token)
    assert lines.lines[0].endswith("INFO tokenward.z: hi request_id=rid-2 route=/x")


def test_configure_replaces_root_handlers() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    switches = {
        name: getattr(logging, name) for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
    }
    try:
        logs.configure("WARNING", "json")
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING
        assert logging._srcfile is None and not logging.logThreads, "the per-record stack walk is off"
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
        for name, saved_value in switches.items():
            setattr(logging, name, saved_value)
