"""The exception tree. Pure: no HTTP imports; ``http.errors`` maps it to responses.

TokenwardError
├── ConfigError               bad TOKENWARD_* variable (start-up only)
├── InvalidRequest            malformed input (400 invalid_request)
│   ├── PayloadTooLarge       body over the cap (413)
│   ├── RequestTimeout        the body did not arrive within TOKENWARD_CLIENT_TIMEOUT (408)
│   ├── UnreadableBody        the body's framing is broken (chunking, length): 400, connection closed
│   └── EncodedBody           a Content-Encoding other than identity (415): bodies are never inflated
├── UnsupportedGrantType      token endpoint, unknown grant_type (400)
├── UnsupportedTokenType      revocation endpoint (400)
├── InvalidGrant              refresh token unknown/expired/revoked/reused (400)
├── InvalidScope              asked for more than was granted (400)
├── ClientAuthError           no or wrong client credentials (401, Basic challenge)
├── InsufficientScope         authenticated, but not allowed (403)
├── CsrfRefused               cookie call without the CSRF header or an allowed Origin (403)
├── InvalidToken              bad or revoked access token (401, Bearer challenge)
├── NotFound                  (404)
├── RateLimited               over a rate limit (429 slow_down, Retry-After)
├── StoreUnavailable          Redis unreachable or not acknowledging (503)
└── CallerGone                the caller closed its connection mid-request (499, nothing is sent)
"""

from __future__ import annotations


class TokenwardError(Exception):
    """Root of every error the service raises on purpose."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigError(TokenwardError):
    """A TOKENWARD_* variable (or a file it names) is invalid."""


class InvalidRequest(TokenwardError):
    """The request is malformed: missing, repeated or garbled parameters."""


class PayloadTooLarge(InvalidRequest):
    """The body exceeds the configured cap."""


class RequestTimeout(InvalidRequest):
    """The client did not send its request body in time."""


class UnreadableBody(InvalidRequest):
    """The body's framing broke while it was read (bad chunking, fewer bytes than announced)."""


class EncodedBody(InvalidRequest):
    """The body carries a Content-Encoding; request bodies are accepted only as they are."""


class UnsupportedGrantType(TokenwardError):
    """The token endpoint was asked for a grant it does not serve."""


class UnsupportedTokenType(TokenwardError):
    """RFC 7009: the server cannot revoke this type of token."""


class InvalidGrant(TokenwardError):
    """The refresh token is not usable. One message for every reason, by design."""

    def __init__(self, detail: str = "the refresh token is invalid, expired or revoked") -> None:
        super().__init__(detail)


class InvalidScope(TokenwardError):
    """The requested scope is not within the granted scope."""


class UnauthorizedClient(TokenwardError):
    """RFC 7009 §2.1: the token was not issued to the client asking to revoke it."""


class ClientAuthError(TokenwardError):
    """Client credentials are missing or wrong."""


class InsufficientScope(TokenwardError):
    """The caller is authenticated but lacks the scope for this endpoint."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this call needs scope {scope!r}")
        self.scope = scope


class CsrfRefused(TokenwardError):
    """A cookie-authenticated call lacks the CSRF header or comes from an origin not on the allow-list."""


class InvalidToken(TokenwardError):
    """The bearer access token is missing, malformed, expired or revoked."""


class NotFound(TokenwardError):
    """The addressed resource does not exist (or is not the caller's)."""


class RateLimited(TokenwardError):
    """A rate limit refused the request; ``retry_after`` is in whole seconds (at least 1)."""

    def __init__(self, retry_after: int, detail: str = "too many requests; retry later") -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class CursorExpired(TokenwardError):
    """The events after a cursor are gone from the stream: reload the snapshot."""


class StoreUnavailable(TokenwardError):
    """Redis could not be reached or did not confirm the write in time."""


class CallerGone(TokenwardError):
    """The caller's connection closed before its request was read or answered: not our failure."""
