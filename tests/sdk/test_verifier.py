"""The SDK verifier applies the service's rules to the service's own tokens."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from service.sdk.cache import DenyCache
from service.sdk.testing import FakeFeed, TokenFactory
from service.sdk.verifier import InvalidToken, RevokedToken, Verifier


@pytest.fixture(name="factory")
def _factory() -> TokenFactory:
    return TokenFactory()


def verifier(factory: TokenFactory, cache: DenyCache | None = None) -> Verifier:
    return Verifier(factory.key_source(), issuer=factory.issuer, audience=factory.audience, cache=cache)


class TestRules:
    async def test_good_token(self, factory: TokenFactory) -> None:
        """A well-formed token gives its claims."""
        claims = await verifier(factory).verify(factory.token(sub="bob", scope="read write"))
        assert claims.sub == "bob" and claims.scopes == {"read", "write"}

    @pytest.mark.parametrize(
        ("kwargs", "reason"),
        [
            ({"headers": {"typ": "JWT"}}, "not an access token"),
            ({"headers": {"jku": "https://evil"}}, "unacceptable header"),
            ({"headers": {"kid": "unknown"}}, "unknown key"),
            ({"extra": {"aud": "other"}}, "invalid token"),
            ({"extra": {"iss": "https://evil"}}, "invalid token"),
            ({"exp": int(time.time()) - 60}, "invalid token"),
            ({"iat": int(time.time()) + 600}, "invalid token"),
            ({"extra": {"sid": "x"}}, "invalid claims"),
        ],
    )
    async def test_refused(self, factory: TokenFactory, kwargs: dict[str, Any], reason: str) -> None:
        """Each rule the service applies, the SDK applies too."""
        with pytest.raises(InvalidToken) as info:
            await verifier(factory).verify(factory.token(**kwargs))
        assert info.value.reason == reason

    async def test_typ_variants_accepted(self, factory: TokenFactory) -> None:
        """RFC 9068 typ, any case, with the application/ prefix."""
        await verifier(factory).verify(factory.token(headers={"typ": "application/AT+JWT"}))

    async def test_algorithm_comes_from_the_key(self, factory: TokenFactory) -> None:
        """An HS256 token using the public key as secret is refused (alg confusion)."""
        good = factory.token()
        header = jwt.get_unverified_header(good)
        forged = jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256", headers={"kid": header["kid"], "typ": "at+jwt"})
        with pytest.raises(InvalidToken, match="unacceptable header"):
            await verifier(factory).verify(forged)

    async def test_oversized_token_refused_before_parsing(self, factory: TokenFactory) -> None:
        """The size cap comes first."""
        with pytest.raises(InvalidToken, match="malformed"):
            await verifier(factory).verify("a" * 5000)

    async def test_missing_required_claim(self, factory: TokenFactory) -> None:
        """sid, jti and the rest are required."""
        key = factory._keys[factory.signing_kid][1]
        token = jwt.encode(
            {
                "iss": factory.issuer,
                "aud": factory.audience,
                "sub": "a",
                "exp": int(time.time()) + 60,
                "iat": int(time.time()),
                "jti": "00abc",
            },
            key,
            algorithm="RS256",
            headers={"kid": factory.signing_kid, "typ": "at+jwt"},
        )
        with pytest.raises(InvalidToken):
            await verifier(factory).verify(token)


class TestRevocation:
    async def test_each_kind_through_a_fake_feed(self, factory: TokenFactory) -> None:
        """FakeFeed revocations reach the verifier without Redis."""
        feed = FakeFeed()
        v = verifier(factory, feed.cache)
        t1, t2, t3 = factory.token(sub="a"), factory.token(sub="b"), factory.token(sub="c")
        c1, c2, c3 = [await v.verify(t) for t in (t1, t2, t3)]
        feed.revoke_jti(c1.jti)
        feed.revoke_sid(c2.sid)
        feed.cut_off("c", before=c3.iat)
        for token in (t1, t2, t3):
            with pytest.raises(RevokedToken):
                await v.verify(token)
        # A token issued after the cut-off second is fine.
        await v.verify(factory.token(sub="c", iat=c3.iat + 1))


async def test_sdk_accepts_what_the_service_mints(keyring: Any) -> None:
    """The service's AccessTokens output verifies in the SDK (one contract, two implementations)."""
    from service.tokens import AccessTokens
    from tests.sdk.conftest import verifier_for

    tokens = AccessTokens(keyring, "https://tokenward.test", "api.test", 300, 5)
    raw = tokens.mint(sub="alice", sid="00sid", jti="00jti", iat=int(time.time()), scope="read", client_id="c")
    claims = await verifier_for(keyring, DenyCache()).verify(raw)
    assert (claims.sub, claims.sid, claims.jti, claims.scope) == ("alice", "00sid", "00jti", "read")


@pytest.mark.parametrize(("sid", "jti"), [("zz-not-ours", "00jti"), ("00sid", "x"), ("00sid", "00bad/chars")])
async def test_sdk_refuses_ids_the_service_refuses(keyring: Any, sid: str, jti: str) -> None:
    """Ids outside the service's shape are refused by both sides (one claim parser)."""
    from service.errors import InvalidToken as ServiceInvalidToken
    from service.tokens import AccessTokens
    from tests.sdk.conftest import verifier_for

    tokens = AccessTokens(keyring, "https://tokenward.test", "api.test", 300, 5)
    raw = tokens.mint(sub="alice", sid=sid, jti=jti, iat=int(time.time()), scope="read", client_id="c")
    with pytest.raises(InvalidToken):
        await verifier_for(keyring, DenyCache()).verify(raw)
    with pytest.raises(ServiceInvalidToken):
        tokens.verify(raw)
