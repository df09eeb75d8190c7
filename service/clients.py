"""Callers of the service (login backend, gateways, admins): HTTP Basic, hashed secrets, scopes.

``TOKENWARD_CLIENTS_FILE`` is TOML::

    [[clients]]
    id = "login-backend"
    secret_hash = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    scopes = ["sessions:write"]

``tokenward clients hash-secret`` prints a new random secret and its hash. Secrets are
machine-generated with at least 128 bits, so one SHA-256 is enough to protect them at
rest while keeping a gateway's per-request introspection cheap; a slow password hash
would cost every request milliseconds for no gain against a 128-bit secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import ClientAuthError, ConfigError, InsufficientScope

SCOPES: Final = frozenset({"sessions:write", "introspect", "revoke", "admin", "events", "metrics"})
_HASH_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
_ID_RE: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MIN_SECRET_LENGTH: Final = 22


@dataclass(frozen=True, slots=True)
class Client:
    """An authenticated caller and what it may do."""

    id: str
    secret_hash: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        """Raise InsufficientScope unless the client holds the scope."""
        if scope not in self.scopes:
            raise InsufficientScope(scope)


def hash_secret(secret: str) -> str:
    """The stored form of a client secret."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh client secret with 256 random bits."""
    return secrets.token_urlsafe(32)


class ClientRegistry:
    """Looks up clients and checks Basic credentials in constant time."""

    def __init__(self, clients: Mapping[str, Client]) -> None:
        self._clients = dict(clients)
        # Unknown ids are compared against this, so timing does not reveal which ids exist.
        self._decoy = hash_secret(new_secret())

    def __len__(self) -> int:
        return len(self._clients)

    def authenticate(self, authorization: str | None) -> Client:
        """The client named by an ``Authorization: Basic`` header, or ClientAuthError."""
        if not authorization:
            raise ClientAuthError("client authentication required")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic" or not credentials:
            raise ClientAuthError("use HTTP Basic client authentication")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            # ValueError: non-ASCII characters in the header, which b64decode refuses outright.
            raise ClientAuthError("malformed Basic credentials") from None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise ClientAuthError("malformed Basic credentials")
        # RFC 6749 §2.3.1: id and secret are form-urlencoded inside Basic.
        from urllib.parse import unquote_plus

        client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        client = self._clients.get(client_id)
        expected = client.secret_hash if client else self._decoy
        if not hmac.compare_digest(hash_secret(secret).encode(), expected.encode()) or client is None:
            raise ClientAuthError("invalid client credentials")
        return client

    @classmethod
    def from_file(cls, path: Path) -> ClientRegistry:
        """Load and validate a clients TOML file."""
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"TOKENWARD_CLIENTS_FILE={str(path)!r} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"TOKENWARD_CLIENTS_FILE={str(path)!r} is not valid TOML: {exc}") from None
        entries = data.get("clients")
        if not isinstance(entries, list) or not entries:
            raise ConfigError("TOKENWARD_CLIENTS_FILE must hold at least one [[clients]] table")
        clients: dict[str, Client] = {}
        for n, entry in enumerate(entries, 1):
            where = f"TOKENWARD_CLIENTS_FILE client #{n}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where} is not a table")
            cid, hashed, scopes = entry.get("id"), entry.get("secret_hash"), entry.get("scopes", [])
            if not isinstance(cid, str) or not _ID_RE.match(cid):
                raise ConfigError(f"{where}: id must match {_ID_RE.pattern}")
            if cid in clients:
                raise ConfigError(f"{where}: duplicate id {cid!r}")
            if not isinstance(hashed, str) or not _HASH_RE.match(hashed):
                raise ConfigError(
                    f"{where} ({cid}): secret_hash must look like 'sha256:<64 hex>'; "
                    "make one with `tokenward clients hash-secret`"
                )
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                raise ConfigError(f"{where} ({cid}): scopes must be a list of strings")
            unknown = set(scopes) - SCOPES
            if unknown:
                raise ConfigError(f"{where} ({cid}): unknown scopes {sorted(unknown)}; known: {sorted(SCOPES)}")
            clients[cid] = Client(cid, hashed, frozenset(scopes))
        return cls(clients)

    @classmethod
    def development(cls, client_id: str, secret: str) -> ClientRegistry:
        """One all-scopes client for the embedded development mode only."""
        return cls({client_id: Client(client_id, hash_secret(secret), SCOPES)})
