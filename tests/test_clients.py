"""The clients file and Basic authentication."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from service.clients import ClientRegistry, hash_secret
from service.errors import ClientAuthError, ConfigError, InsufficientScope


def header(cid: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()


def test_file_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[[clients]]\nid = "gw"\nsecret_hash = "{hash_secret("s" * 30)}"\nscopes = ["introspect"]\n')
    reg = ClientRegistry.from_file(path)
    client = reg.authenticate(header("gw", "s" * 30))
    assert client.id == "gw"
    client.require("introspect")
    with pytest.raises(InsufficientScope):
        client.require("admin")
    with pytest.raises(ClientAuthError):
        reg.authenticate(header("gw", "wrong"))
    with pytest.raises(ClientAuthError):
        reg.authenticate(header("nope", "s" * 30))


@pytest.mark.parametrize(
    "text",
    [
        "not toml [",
        "[[clients]]\nid = 'a'\nsecret_hash = 'plain'\n",
        "[[clients]]\nid = 'a'\nsecret_hash = 'sha256:" + "0" * 64 + "'\nscopes = ['root']\n",
        "clients = []\n",
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="TOKENWARD_CLIENTS_FILE"):
        ClientRegistry.from_file(path)
