"""``client_address``: the socket peer, unless it is a trusted proxy; then X-Forwarded-For, right to left."""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from service.config import Settings
from service.http.parsing import client_address

LAN = "10.0.0.0/8"


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.5", ["198.51.100.1"], [], "203.0.113.5"),
        ("203.0.113.5", ["198.51.100.1"], [LAN], "203.0.113.5"),
        ("10.0.0.1", [], [LAN], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.1"], [LAN], "198.51.100.1"),
        ("10.0.0.1", ["6.6.6.6, 198.51.100.1"], [LAN], "198.51.100.1"),
        ("10.0.0.1", ["198.51.100.1, 10.0.0.2"], [LAN], "198.51.100.1"),
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], [LAN], "10.0.0.3"),
        ("10.0.0.1", ["garbage, 198.51.100.1"], [LAN], "198.51.100.1"),
        ("10.0.0.1", ["198.51.100.1, garbage"], [LAN], "10.0.0.1"),
        ("10.0.0.1", ["6.6.6.6", "198.51.100.1"], [LAN], "198.51.100.1"),
        ("10.0.0.1", ["198.51.100.1:5555"], [LAN], "198.51.100.1"),
        ("10.0.0.1", ["[2001:db8::2]:443"], [LAN], "2001:db8::2"),
        ("::1", ["2001:db8::1"], ["::1/128"], "2001:db8::1"),
        ("::1", ["2001:db8::1"], [LAN], "::1"),
        ("::ffff:10.0.0.1", ["198.51.100.1"], [LAN], "198.51.100.1"),
        ("10.0.0.1", ["::ffff:198.51.100.9"], [LAN], "198.51.100.9"),
        ("", ["198.51.100.1"], [LAN], None),
    ],
)
def test_client_address(peer: str, forwarded: list[str], trusted: list[str], expected: str | None) -> None:
    headers = CIMultiDict(("X-Forwarded-For", value) for value in forwarded)
    request = make_mocked_request("POST", "/oauth/token", headers=headers).clone(remote=peer)
    settings = Settings(trusted_proxies=tuple(ipaddress.ip_network(n) for n in trusted))
    found = client_address(request, settings)
    assert (None if found is None else str(found)) == expected
