"""The ceilings: the least an aiohttp process can do per request for each Tokenward figure.

Run as ``python -m benchmarks.ceiling`` with the same ``TOKENWARD_*`` environment as the
service under test (same Redis, same keys) plus ``CEILING_PORT``. Same process model as
``tokenward serve``: one process, uvloop, access log off. Routes:

* ``GET /const``   a constant JSON body: the HTTP ceiling (forward-auth, cached mode)
* ``GET /get``     one Redis GET, then a constant body: strict forward-auth/introspection
                   (Tokenward's deny check is one round trip too, an MGET of three keys)
* ``POST /rotate`` ``refresh_token=...`` form body: the real rotation script (service/lua/rotate.lua
                   through the real Store/Scripts) and one RS256 signature, the least a
                   refresh can do; the answer has the same fields as ``/oauth/token``.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncIterator
from typing import Final

import orjson
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from service.anomalies import SIGNALS_CHANNEL, RefreshOrigin
from service.app import load_keyring
from service.config import Settings
from service.store import EVENTS_CHANNEL, Store, connect, text
from service.tokens import RefreshToken, new_jti, new_secret, seal, secret_hash

CONST_BODY: Final = b'{"ok":true}'
STORE: Final = web.AppKey("store", Store)
_GET_KEY: Final = "tw:{0}:dj:00ceiling-probe"


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


async def const(request: web.Request) -> web.Response:
    """The HTTP ceiling."""
    return web.Response(body=CONST_BODY, content_type="application/json")


async def one_get(request: web.Request) -> web.Response:
    """One Redis round trip."""
    await request.app[STORE].client.get(_GET_KEY)
    return web.Response(body=CONST_BODY, content_type="application/json")


def make_app(settings: Settings) -> web.Application:
    """The ceiling application for the service's settings."""
    ring = load_keyring(settings)
    signer = ring.signer
    if not isinstance(signer.private, rsa.RSAPrivateKey):
        raise SystemExit("the ceiling signs RS256 only: give it an RSA key")
    private = signer.private
    header = _b64(orjson.dumps({"alg": "RS256", "typ": "at+jwt", "kid": signer.kid}))
    grace_ms = settings.refresh_grace * 1000
    retention_ms = settings.event_retention * 1000

    async def rotate(request: web.Request) -> web.Response:
        """Parse the token, run rotate.lua, sign one access token: nothing else."""
        body = (await request.read()).decode()
        token = RefreshToken.parse(body.partition("refresh_token=")[2].partition("&")[0])
        if token is None:
            return web.Response(status=400)
        store = request.app[STORE]
        k = store.keys
        p = k.partition_of_id(token.sid)
        # The tag is verified before anything is spent, under the key the session holds.
        tag_key = await store.client.hmget(k.session(p, token.sid), "K", "k", "h")
        key = next((bytes(v) for v in tag_key if v is not None), None)
        if key is None or not token.authentic(key):
            return web.Response(status=400)
        now = int(time.time() * 1000)
        successor = new_secret()
        origin = RefreshOrigin.of(request.remote, request.headers.get("User-Agent"))
        result = await store.scripts.rotate(
            keys=[k.session(p, token.sid), k.deny_sid(p, token.sid), k.seq(p), k.stream(p), k.signals(p)],
            args=[
                now,
                token.gen,
                token.hash,
                key,
                secret_hash(successor),
                seal(successor, token.secret),
                grace_ms,
                settings.refresh_grace_uses,
                "",
                "",
                now + settings.deny_ttl * 1000,
                retention_ms,
                EVENTS_CHANNEL,
                p,
                token.sid,
                # The anomaly check is part of a rotation's real work: keep it in the ceiling.
                origin.ip,
                origin.network,
                origin.user_agent,
                settings.refresh_anomaly,
                settings.access_ttl,
                settings.refresh_burst,
                SIGNALS_CHANNEL,
            ],
        )
        if int(result[0]) != 1:
            return web.Response(status=400)
        iat = now // 1000
        claims = {
            "iss": settings.issuer,
            "sub": text(result[4]),
            "aud": settings.audience,
            "exp": iat + settings.access_ttl,
            "iat": iat,
            "jti": new_jti(p),
            "sid": token.sid,
            "client_id": text(result[5]),
            "scope": text(result[6]),
        }
        signing_input = header + b"." + _b64(orjson.dumps(claims))
        signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        refresh = RefreshToken.issue(token.sid, int(result[1]), bytes(result[2]), successor)
        answer = {
            "access_token": (signing_input + b"." + _b64(signature)).decode(),
            "token_type": "Bearer",
            "expires_in": settings.access_ttl,
            "refresh_token": str(refresh),
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = await connect(settings)
        yield
        await app[STORE].aclose()

    app = web.Application()
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_get("/const", const)
    app.router.add_get("/get", one_get)
    app.router.add_post("/rotate", rotate)
    return app


def main() -> None:
    """Serve the ceilings like ``tokenward serve`` serves Tokenward."""
    import uvloop

    settings = Settings.from_env(os.environ)
    web.run_app(
        make_app(settings),
        host="127.0.0.1",
        port=int(os.environ["CEILING_PORT"]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
