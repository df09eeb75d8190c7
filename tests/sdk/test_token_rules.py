"""One token rule set: the service (a real process, forward-auth) and the SDK decide alike.

Every token is forged with joserfc, a JOSE library independent of the PyJWT both sides use,
so a rule the two share by accident of one library cannot hide here. The table says what
each case must get; the test asserts both verifiers give exactly that.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc import jws
from joserfc.jwk import OctKey, RSAKey

from service.keys import KeyRing, to_pem
from service.sdk import InvalidToken, Verifier
from tests.conftest import CLIENT_SECRETS
from tests.sdk.conftest import RingKeys
from tests.support.processes import ServiceProcess, service_on_own_redis

ISSUER, AUDIENCE, TTL = "https://tokenward.test", "api.test", 300
Forge = Callable[[KeyRing, int], str]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(now: int, **changes: Any) -> dict[str, Any]:
    """A valid payload; a change of None drops the claim."""
    out: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + TTL,
        "jti": "00" + "j" * 16,
        "sid": "00" + "s" * 22,
        "client_id": "login",
        "scope": "read",
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def header(ring: KeyRing, **changes: Any) -> dict[str, Any]:
    return {"alg": "RS256", "kid": ring.signer.kid, "typ": "at+jwt", **changes}


def signed(ring: KeyRing, head: dict[str, Any], payload: bytes) -> str:
    """RS256 through joserfc with the ring's signing key."""
    key = RSAKey.import_key(to_pem(ring.signer.private))
    return jws.serialize_compact(head, payload, key, algorithms=[head["alg"]])


def by_hand(ring: KeyRing, head: dict[str, Any], payload: bytes) -> str:
    """RS256 over exactly these bytes (for headers joserfc will not write, such as ``crit``)."""
    signing = f"{b64(json.dumps(head).encode())}.{b64(payload)}"
    private = ring.signer.private
    assert isinstance(private, rsa.RSAPrivateKey)
    return f"{signing}.{b64(private.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


def payload(now: int) -> bytes:
    return json.dumps(claims(now)).encode()


def public_jwk(ring: KeyRing) -> dict[str, Any]:
    return dict(RSAKey.import_key(to_pem(ring.signer.private)).as_dict(private=False))


def jwt_of(**changes: Any) -> Forge:
    return lambda ring, now: signed(ring, header(ring), json.dumps(claims(now, **changes)).encode())


def with_header(**changes: Any) -> Forge:
    return lambda ring, now: signed(ring, header(ring, **changes), json.dumps(claims(now)).encode())


def raw_payload(payload: str) -> Forge:
    return lambda ring, now: signed(ring, header(ring), payload.replace("NOW", str(now)).encode())


def hs256_confusion(ring: KeyRing, now: int) -> str:
    key = OctKey.import_key("s" * 32)
    return jws.serialize_compact(header(ring, alg="HS256"), json.dumps(claims(now)).encode(), key, algorithms=["HS256"])


def alg_none(ring: KeyRing, now: int) -> str:
    return f"{b64(json.dumps(header(ring, alg='none')).encode())}.{b64(json.dumps(claims(now)).encode())}."


def tampered(ring: KeyRing, now: int) -> str:
    head, _, sig = jwt_of()(ring, now).split(".")
    return f"{head}.{b64(json.dumps(claims(now, sub='mallory')).encode())}.{sig}"


def padded(ring: KeyRing, now: int) -> str:
    head, payload, sig = jwt_of()(ring, now).split(".")
    return f"{head}.{payload}{'=' * (-len(payload) % 4) or '=='}.{sig}"


def duplicate_exp(ring: KeyRing, now: int) -> str:
    """Two exp members: whichever a parser keeps, both verifiers must keep the same one."""
    body = json.dumps(claims(now))[:-1] + f', "exp": {now + 86400}}}'
    return signed(ring, header(ring), body.encode())


# name: (forge, accepted)
CASES: dict[str, tuple[Forge, bool]] = {
    "valid": (jwt_of(), True),
    "lifetime exactly the access TTL": (lambda r, n: jwt_of(iat=n, exp=n + TTL)(r, n), True),
    "lifetime one second over the access TTL": (lambda r, n: jwt_of(exp=n + TTL + 1)(r, n), False),
    "lifetime of a day": (lambda r, n: jwt_of(exp=n + 86400)(r, n), False),
    "b64 header (RFC 7797)": (with_header(b64=True), False),
    "crit header": (lambda r, n: by_hand(r, header(r, crit=["exp"], exp=1), payload(n)), False),
    "signed by hand (the crit case's control)": (lambda r, n: by_hand(r, header(r), payload(n)), True),
    "jku header": (with_header(jku="https://evil.example/jwks"), False),
    "x5u header": (with_header(x5u="https://evil.example/cert"), False),
    "jwk header": (lambda r, n: with_header(jwk=public_jwk(r))(r, n), False),
    "x5c header": (with_header(x5c=["MIIB"]), False),
    "typ application/at+JWT": (with_header(typ="application/at+JWT"), True),
    "typ JWT": (with_header(typ="JWT"), False),
    "no typ": (lambda r, n: signed(r, {"alg": "RS256", "kid": r.signer.kid}, json.dumps(claims(n)).encode()), False),
    "unknown kid": (with_header(kid="nobody"), False),
    "HS256 under the RSA kid": (hs256_confusion, False),
    "alg none": (alg_none, False),
    "payload altered after signing": (tampered, False),
    "padded base64": (padded, False),
    "wrong issuer": (jwt_of(iss="https://evil.example"), False),
    "audience list holding ours": (jwt_of(aud=["other", AUDIENCE]), True),
    "other audience": (jwt_of(aud="other"), False),
    "audience list with a non-string": (jwt_of(aud=[AUDIENCE, 1]), False),
    "expired": (lambda r, n: jwt_of(iat=n - 200, exp=n - 100)(r, n), False),
    "iat in the future": (lambda r, n: jwt_of(iat=n + 60, exp=n + 120)(r, n), False),
    "nbf in the future": (lambda r, n: jwt_of(nbf=n + 60)(r, n), False),
    "nbf as a float": (lambda r, n: jwt_of(nbf=float(n))(r, n), False),
    "exp as a float": (lambda r, n: jwt_of(exp=float(n + 100))(r, n), False),
    "iat as a boolean": (jwt_of(iat=True), False),
    "no sid": (jwt_of(sid=None), False),
    "no jti": (jwt_of(jti=None), False),
    "no sub": (jwt_of(sub=None), False),
    "sid of another shape": (jwt_of(sid="../x"), False),
    "sub not a string": (jwt_of(sub=42), False),
    "scope not a string": (jwt_of(scope=["read"]), False),
    "payload a JSON array": (raw_payload("[1, 2]"), False),
    "payload not JSON": (raw_payload("not json"), False),
    "duplicate exp, the last one a day away": (duplicate_exp, False),
    "oversized": (jwt_of(pad="x" * 4000), False),
}  # fmt: skip


@pytest.fixture(name="service", scope="module")
def _service(tmp_path_factory: pytest.TempPathFactory, keyring: KeyRing) -> Iterator[ServiceProcess]:
    directory = Path(tmp_path_factory.mktemp("rules"))
    with service_on_own_redis(directory, keyring, CLIENT_SECRETS, {"TOKENWARD_ACCESS_TTL": str(TTL)}) as service:
        yield service


def service_accepts(service: ServiceProcess, token: str) -> bool:
    """Forward-auth's decision: 200 allows, 401 refuses; anything else fails the test."""
    request = urllib.request.Request(service.url + "/v1/authz", headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            status: int = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status in (200, 401), status
    return status == 200


async def sdk_accepts(verifier: Verifier, token: str) -> bool:
    try:
        await verifier.verify(token)
    except InvalidToken:
        return False
    return True


@pytest.mark.parametrize("name", CASES)
async def test_service_and_sdk_decide_alike(service: ServiceProcess, keyring: KeyRing, name: str) -> None:
    forge, accepted = CASES[name]
    # A second after the process started: its boot marker refuses tokens issued before it.
    now = int(time.time())
    token = forge(keyring, now)
    verifier = Verifier(RingKeys(keyring), issuer=ISSUER, audience=AUDIENCE, access_ttl=TTL)
    decisions = {"service": service_accepts(service, token), "sdk": await sdk_accepts(verifier, token)}
    assert decisions == {"service": accepted, "sdk": accepted}


async def test_a_trailing_newline_is_refused(keyring: KeyRing) -> None:
    """No HTTP header carries it, but the SDK is also called with tokens from elsewhere ("$" would let it by)."""
    token = jwt_of()(keyring, int(time.time()))
    verifier = Verifier(RingKeys(keyring), issuer=ISSUER, audience=AUDIENCE, access_ttl=TTL)
    assert await sdk_accepts(verifier, token)
    assert not await sdk_accepts(verifier, token + "\n")
