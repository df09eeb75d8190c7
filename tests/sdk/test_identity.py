"""The sub rule and its header form (service.sdk.identity): the one place both sides take it from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.sdk.identity import UnsafeSub, check_sub, decode_header, encode_header, is_safe_sub


@given(st.text(min_size=1))
def test_header_form_is_exact_and_plain_ascii(sub: str) -> None:
    """Any valid Unicode string goes to a space-free ASCII header value and back unchanged."""
    try:
        header = encode_header(sub)
    except UnicodeEncodeError:  # a lone surrogate: not a string a JSON body can carry
        return
    assert header.isascii() and header.isprintable() and " " not in header
    assert decode_header(header) == sub


@given(st.text(min_size=1), st.text(min_size=1))
def test_two_subs_never_share_a_header(a: str, b: str) -> None:
    try:
        same = encode_header(a) == encode_header(b)
    except UnicodeEncodeError:
        return
    assert same == (a == b)


@pytest.mark.parametrize("value", ["a%2fb", "%61", "a b", "a\u00e9", "%ff", "a\tb"])
def test_decode_takes_only_the_canonical_form(value: str) -> None:
    with pytest.raises(UnsafeSub):
        decode_header(value)


def test_ordinary_identifiers_are_their_own_header_form() -> None:
    for sub in ("alice", "user-42", "a.b_c~d", "00ff"):
        assert encode_header(sub) == sub and check_sub(sub) == sub
    assert encode_header(" admin-user ") == "%20admin-user%20" != encode_header("admin-user")


@pytest.mark.parametrize(
    "sub", ["", " a", "a ", "a\u00a0", "a\x00", "a\x7f", "a\u0085", "a\u202e", "a\u2066", "a\u200b", "a\ufeff",
            "a\u2029", "e\u0301", ".", "..", "x" * 256, "\ud800"],
)  # fmt: skip
def test_unsafe_subs(sub: str) -> None:
    assert not is_safe_sub(sub)


@pytest.mark.parametrize("sub", ["a b", "é", "{x}", "a/b", "50%", "...", "日本", "x" * 255, "ü" * 127])
def test_safe_subs(sub: str) -> None:
    assert is_safe_sub(sub)
