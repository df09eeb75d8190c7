"""The wire schema, and the SDK's independence from the server."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from service.sdk.events import (
    Event,
    EventFormatError,
    UnsupportedEvent,
    deny_key,
    parse_deny_key,
    parse_event,
    partition_of_sub,
)

SDK_DIR = Path(__file__).parents[2] / "service" / "sdk"
GOOD = {"v": 1, "seq": 7, "p": 0, "kind": "sid", "id": "00abc", "before": 0, "until": 100, "at": 5, "reason": "logout"}


class TestParse:
    def test_round_trip(self) -> None:
        """What to_json writes, parse_event reads back (xid included)."""
        event = parse_event(orjson.dumps({**GOOD, "xid": "5-0"}))
        assert event == Event(seq=7, p=0, kind="sid", id="00abc", before=0, until=100, at=5, reason="logout", xid="5-0")
        assert parse_event(event.to_json()) == event

    def test_unknown_fields_are_ignored(self) -> None:
        """Additive changes within a version must not break readers."""
        assert parse_event(orjson.dumps({**GOOD, "new_field": [1, 2]})).seq == 7

    @pytest.mark.parametrize("change", [{"v": 2}, {"kind": "device"}])
    def test_future_version_or_kind_is_unsupported_with_position(self, change: dict[str, object]) -> None:
        """A reader keeps its position through an event it cannot apply."""
        with pytest.raises(UnsupportedEvent) as info:
            parse_event(orjson.dumps({**GOOD, **change}))
        assert (info.value.seq, info.value.p) == (7, 0)

    @pytest.mark.parametrize(
        "raw",
        [
            b"nope",
            b"[]",
            orjson.dumps({**GOOD, "seq": "7"}),
            orjson.dumps({**GOOD, "id": ""}),
            orjson.dumps({**GOOD, "until": True}),
            orjson.dumps({k: v for k, v in GOOD.items() if k != "before"}),
        ],
    )
    def test_malformed(self, raw: bytes) -> None:
        """Anything off is an EventFormatError, never a half-parsed event."""
        with pytest.raises(EventFormatError):
            parse_event(raw)

    def test_key_names_match_the_server(self) -> None:
        """The SDK's key names and partitioning equal the server's Keyspace."""
        from service.store import Keyspace

        ks = Keyspace(16)
        assert deny_key(3, "jti", "03x") == ks.deny_jti(3, "03x")
        assert deny_key(3, "sid", "03x") == ks.deny_sid(3, "03x")
        assert deny_key(3, "sub", "bob") == ks.cutoff(3, "bob")
        assert partition_of_sub("bob", 16) == ks.partition_of_sub("bob")
        assert parse_deny_key(ks.cutoff(3, "a:b")) == (3, "sub", "a:b")
        assert parse_deny_key(ks.session(3, "x")) is None


class TestIndependence:
    def test_sdk_imports_nothing_from_the_server(self) -> None:
        """No module of service.sdk imports service.* outside the sdk (AST scan)."""
        offenders = []
        for path in SDK_DIR.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    mod = node.module or ""
                    server = mod.startswith("service") and not mod.startswith("service.sdk")
                    absolute_server = node.level == 0 and server
                    if node.level > 1 or absolute_server:
                        offenders.append(f"{path.name}: from {'.' * node.level}{mod}")
                elif isinstance(node, ast.Import):
                    offenders += [
                        f"{path.name}: import {a.name}"
                        for a in node.names
                        if a.name.startswith("service") and not a.name.startswith("service.sdk")
                    ]
        assert offenders == []

    def test_importing_the_sdk_loads_no_server_module(self) -> None:
        """In a fresh interpreter, importing service.sdk (all of it) loads only service and service.sdk.*."""
        code = (
            "import sys, service.sdk, service.sdk.testing, service.sdk.middleware;"
            "print(sorted(m for m in sys.modules if m.startswith('service')))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        loaded = eval(out)  # noqa: S307 - our own subprocess printed a list literal
        assert [m for m in loaded if m != "service" and not m.startswith("service.sdk")] == []
