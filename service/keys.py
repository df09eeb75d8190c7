"""Signing keys: a ring where one key signs and every key still present verifies.

Keys are PEM files in ``TOKENWARD_KEYS_DIR``, one per key id: ``<kid>.pem``. The
algorithm is fixed by the key's type (RSA: RS256, EC P-256: ES256, Ed25519: EdDSA)
and never taken from a token. The signing key is ``TOKENWARD_SIGNING_KID`` when set,
otherwise the last kid in sort order, so date-named files (``2026-11-23.pem``) rotate
by adding a file. Every key in the directory is published in the JWKS; retiring a key
means deleting its file once no token signed with it can still be valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from .errors import ConfigError

KID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key: its id, its single allowed algorithm and both halves."""

    kid: str
    alg: str
    private: PrivateKey
    public: PublicKey

    def jwk(self) -> dict[str, Any]:
        """The public half as a JWK (never the private parts)."""
        if isinstance(self.public, rsa.RSAPublicKey):
            raw = RSAAlgorithm.to_jwk(self.public, as_dict=True)
        elif isinstance(self.public, ec.EllipticCurvePublicKey):
            raw = ECAlgorithm.to_jwk(self.public, as_dict=True)
        else:
            raw = OKPAlgorithm.to_jwk(self.public, as_dict=True)
        public = {k: v for k, v in raw.items() if k in {"kty", "n", "e", "crv", "x", "y"}}
        return {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}


def algorithm_for(key: PrivateKey) -> str:
    """The one algorithm a key may be used with."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError(f"RSA keys must have at least 2048 bits, got {key.key_size}")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"EC keys must use P-256 (ES256), got {key.curve.name}")
        return "ES256"
    return "EdDSA"


def make_key(kid: str, private: PrivateKey) -> SigningKey:
    """Wrap a private key with its id and fixed algorithm."""
    return SigningKey(kid=kid, alg=algorithm_for(private), private=private, public=private.public_key())


def generate(alg: str = "RS256") -> PrivateKey:
    """A new private key for an algorithm."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigError(f"unknown algorithm {alg!r}: use RS256, ES256 or EdDSA")


def to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (protect the file, not the bytes)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class KeyRing:
    """The keys that verify, and the one that signs."""

    def __init__(self, keys: Mapping[str, SigningKey], signing_kid: str) -> None:
        if signing_kid not in keys:
            raise ConfigError(f"TOKENWARD_SIGNING_KID={signing_kid!r} is not among the keys")
        self.keys = dict(keys)
        self.signer = self.keys[signing_kid]
        self._jwks = json.dumps({"keys": [k.jwk() for k in self.keys.values()]}).encode()

    def get(self, kid: str) -> SigningKey | None:
        """The key for a kid, or None."""
        return self.keys.get(kid)

    def jwks_bytes(self) -> bytes:
        """The JWKS document, rendered once."""
        return self._jwks

    @classmethod
    def ephemeral(cls) -> KeyRing:
        """One fresh RS256 key that lives as long as the process (development only)."""
        key = make_key("ephemeral", generate("RS256"))
        return cls({key.kid: key}, key.kid)

    @classmethod
    def from_dir(cls, directory: Path, signing_kid: str | None = None) -> KeyRing:
        """Load every ``<kid>.pem`` in a directory."""
        if not directory.is_dir():
            raise ConfigError(f"TOKENWARD_KEYS_DIR={str(directory)!r} is not a directory")
        keys: dict[str, SigningKey] = {}
        for path in sorted(directory.glob("*.pem")):
            kid = path.stem
            if not KID_PATTERN.match(kid):
                raise ConfigError(f"TOKENWARD_KEYS_DIR: {path.name} is not a valid key id")
            try:
                private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"TOKENWARD_KEYS_DIR: {path.name} is not a private key: {exc}") from None
            if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
                raise ConfigError(f"TOKENWARD_KEYS_DIR: {path.name} is of an unsupported key type")
            keys[kid] = make_key(kid, private)
        if not keys:
            raise ConfigError(f"TOKENWARD_KEYS_DIR={str(directory)!r} holds no <kid>.pem files")
        return cls(keys, signing_kid or sorted(keys)[-1])
