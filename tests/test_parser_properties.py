"""Properties of the parsers that read credentials and cursors from callers (issue 15).

Each parser, given any string at all, either refuses it cleanly (None, or our own exception)
or parses it to exactly what produced it: the value written back out is the input, byte for
byte, so two spellings never name one token or position, and nothing past the match (a
trailing newline, a second header) is silently dropped. Hypothesis generates the inputs:
arbitrary text, well-formed values, and well-formed values with a few characters changed,
added or cut (where the mistakes hide). Derandomized and bounded, so the run is the same
every time and takes about a second.
"""

from __future__ import annotations

import base64
import string
from urllib.parse import quote_plus, unquote_plus

from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from service.clients import Client, ClientRegistry, hash_secret
from service.errors import ClientAuthError, InvalidRequest
from service.events import Cursor, Position
from service.http.parsing import bearer
from service.tokens import RefreshToken

PROPERTY = settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

B64URL = string.ascii_letters + string.digits + "-_"
HEX = "0123456789abcdef"
U64 = 2**64 - 1


def fixed(alphabet: str, size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=size, max_size=size)


# What regular expressions and strip() treat specially, and separators of the formats.
EDGES = ["\n", "\r\n", " ", "\t", "\x00", "\x0b", "\u00a0", "\u2028", ".", "_", "-", "0", "=", ":", "%", "+"]


def mutated(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Well-formed values, and the same with a few characters added, cut or replaced."""

    @st.composite
    def change(draw: st.DrawFn) -> str:
        text = draw(valid)
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["append", "prepend", "insert", "cut", "replace", "truncate"]))
        piece = draw(st.sampled_from(EDGES) | st.text(min_size=1, max_size=3))
        if edit == "append":
            return text + piece
        if edit == "prepend":
            return piece + text
        if edit == "insert":
            return text[:at] + piece + text[at:]
        if edit == "cut":
            return text[:at] + text[at + 1 :]
        if edit == "replace":
            return text[:at] + piece + text[at + len(piece) :]
        return text[:at]

    # Changed values twice as often as the others: that is where the mistakes hide.
    return st.one_of(change(), change(), valid, st.text())


# Refresh tokens: twr_<sid>.<gen>.<secret>.<tag>.
refresh_tokens = st.builds(
    RefreshToken,
    sid=st.builds(str.__add__, fixed(HEX, 2), fixed(B64URL, 22)),
    gen=st.integers(0, 999_999_999),
    secret=fixed(B64URL, 32),
    tag=fixed(HEX, 16),
)


@PROPERTY
@given(refresh_tokens)
def test_a_refresh_token_round_trips(token: RefreshToken) -> None:
    assert RefreshToken.parse(str(token)) == token


@PROPERTY
@given(mutated(refresh_tokens.map(str)))
def test_any_string_is_refused_or_is_exactly_a_refresh_token(raw: str) -> None:
    parsed = RefreshToken.parse(raw)
    assert parsed is None or str(parsed) == raw


# Bearer headers (RFC 6750 §2.1): the scheme in any case, one space, the token.
b64tokens = st.from_regex(r"[A-Za-z0-9\-._~+/]+=*", fullmatch=True)
schemes = st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR"])


def authorization(*values: str) -> str | None:
    """What the Bearer parser makes of a request carrying these Authorization headers."""
    request = make_mocked_request("GET", "/v1/me/sessions", headers=CIMultiDict(("Authorization", v) for v in values))
    return bearer(request)


@PROPERTY
@given(schemes, b64tokens)
def test_a_bearer_header_round_trips(scheme: str, token: str) -> None:
    assert authorization(f"{scheme} {token}") == token


@PROPERTY
@given(mutated(st.builds("{} {}".format, schemes, b64tokens)))
def test_any_authorization_header_is_refused_or_is_exactly_a_bearer_token(header: str) -> None:
    token = authorization(header)
    if token is not None:
        scheme, _, rest = header.partition(" ")
        assert scheme.lower() == "bearer" and token and rest.strip() == token


@PROPERTY
@given(st.lists(mutated(st.builds("{} {}".format, schemes, b64tokens)), min_size=2, max_size=3))
def test_two_authorization_headers_are_refused_whatever_they_hold(headers: list[str]) -> None:
    try:
        authorization(*headers)
    except InvalidRequest:
        return
    raise AssertionError(f"two Authorization headers were read: {headers!r}")


# Event cursors: 1.<p>_<ms>-<n>_<seq>..., one position per partition, in order.
positions = st.builds(
    lambda ms, n, seq: Position(f"{ms}-{n}", seq),
    st.integers(0, U64),
    st.integers(0, U64 - 1),
    st.integers(0, 2**63 - 1),
)
cursors = st.lists(positions, min_size=1, max_size=4).map(lambda found: Cursor(tuple(found)))


@PROPERTY
@given(cursors)
def test_a_cursor_round_trips(cursor: Cursor) -> None:
    assert Cursor.parse(cursor.encode(), len(cursor.positions)) == cursor


@PROPERTY
@given(mutated(cursors.map(Cursor.encode)), st.integers(1, 4))
def test_any_string_is_refused_or_is_exactly_a_cursor(raw: str, partitions: int) -> None:
    try:
        cursor = Cursor.parse(raw, partitions)
    except InvalidRequest:
        return
    assert cursor.encode() == raw and len(cursor.positions) == partitions


# Basic client credentials (RFC 6749 §2.3.1: id and secret form-encoded inside RFC 7617 Basic).
client_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)
client_secrets = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=80)


def basic_header(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()


@PROPERTY
@given(client_ids, client_secrets)
def test_basic_credentials_round_trip(client_id: str, secret: str) -> None:
    client = Client(client_id, hash_secret(secret), frozenset())
    assert ClientRegistry({client_id: client}).authenticate(basic_header(client_id, secret)) is client


REGISTERED = Client("gateway", hash_secret("gateway-secret"), frozenset({"introspect"}))


@PROPERTY
@given(mutated(st.just(basic_header("gateway", "gateway-secret"))))
def test_any_authorization_header_is_refused_or_names_the_client_exactly(header: str) -> None:
    try:
        found = ClientRegistry({"gateway": REGISTERED}).authenticate(header)
    except ClientAuthError:
        return
    # Accepted: then it carried exactly this client's id and secret.
    decoded = base64.b64decode(header.partition(" ")[2].strip()).decode()
    client_id, _, secret = decoded.partition(":")
    assert found is REGISTERED and unquote_plus(client_id) == "gateway" and unquote_plus(secret) == "gateway-secret"
