"""The revocation event wire schema (version 1), shared by the service and the SDK.

This module is the SDK's half of the contract written up in ``docs/events.md``. It
knows the key names, the channel and the JSON shape of an event, and nothing else:
it imports nothing from the rest of ``service``, so a resource server can depend on
the SDK without the server's code.

Versioning rules (the same text as in the docs):

* ``v`` is the schema's major version. Within a version the producer may add fields;
  readers must ignore fields they do not know.
* Anything a reader could misread (a field changing meaning, a new ``kind``) gets a
  new ``v``. The envelope fields ``v``, ``seq``, ``p`` and ``at`` (and ``xid`` on
  pub/sub) keep their meaning in every version, so a reader can always keep its
  position in the stream, even across an event it cannot apply.
* A reader that meets a ``v`` (or a ``kind``) it does not know must not pretend it
  applied it: the event may deny tokens the reader would otherwise accept. The SDK
  raises :class:`UnsupportedEvent`; the listener keeps its position and reports
  itself unhealthy until it is upgraded (fail closed).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

WIRE_VERSION: Final = 1
CHANNEL: Final = "tw:events"
KINDS: Final = ("jti", "sid", "sub")
MAX_ID_LENGTH: Final = 512

Kind = Literal["jti", "sid", "sub"]

# The two letters after ``d`` in a deny key name, per kind.
_KIND_CODE: Final[dict[str, str]] = {"jti": "dj", "sid": "ds", "sub": "dc"}
_CODE_KIND: Final[dict[str, Kind]] = {"dj": "jti", "ds": "sid", "dc": "sub"}


class EventFormatError(ValueError):
    """The bytes are not a well-formed event of a version this reader knows."""


class UnsupportedEvent(EventFormatError):
    """A well-formed envelope whose version or kind this reader cannot apply.

    ``seq`` and ``p`` are set from the envelope so the reader can keep its position.
    """

    def __init__(self, message: str, *, seq: int, p: int) -> None:
        super().__init__(message)
        self.seq = seq
        self.p = p


def stream_key(p: int) -> str:
    """The partition's replay log (a stream; one field ``e`` holding the event JSON)."""
    return f"tw:{{{p}}}:ev"


def seq_key(p: int) -> str:
    """The partition's event counter (a string holding the last seq)."""
    return f"tw:{{{p}}}:seq"


def boot_key(p: int) -> str:
    """The partition's boot marker (epoch second its store was first used; no TTL)."""
    return f"tw:{{{p}}}:boot"


def deny_key(p: int, kind: str, ident: str) -> str:
    """The deny entry for a jti, sid or sub."""
    return f"tw:{{{p}}}:{_KIND_CODE[kind]}:{ident}"


def deny_pattern(p: int) -> str:
    """A SCAN MATCH pattern for every deny entry of a partition."""
    return f"tw:{{{p}}}:d[jsc]:*"


def parse_deny_key(key: str) -> tuple[int, Kind, str] | None:
    """(partition, kind, id) of a deny key name, or None when it is not one."""
    if not key.startswith("tw:{"):
        return None
    close = key.find("}:", 4)
    if close < 0:
        return None
    part, rest = key[4:close], key[close + 2 :]
    kind = _CODE_KIND.get(rest[:2])
    if kind is None or rest[2:3] != ":" or not part.isdigit():
        return None
    return int(part), kind, rest[3:]


def deny_until(now_ms: int, pttl_ms: int) -> int:
    """A deny key's ``until`` (epoch s) from its ``PTTL`` and the reader's clock after reading it.

    The service sets every deny key to expire on a whole second, so rounding recovers that
    second exactly despite the read's latency or clock skew under half a second.
    """
    return (now_ms + pttl_ms + 500) // 1000


def partition_of_sub(sub: str, partitions: int) -> int:
    """The partition of a user: ``crc32(sub) % partitions``."""
    return zlib.crc32(sub.encode()) % partitions


def partition_of_id(ident: str) -> int:
    """The partition a sid or jti was minted in: its first two hex digits."""
    return int(ident[:2], 16)


@dataclass(frozen=True, slots=True)
class Event:
    """One revocation: deny a ``jti``, a ``sid``, or a ``sub``'s tokens issued up to ``before``.

    ``until`` (epoch seconds) is when the deny entry expires: no token it could match
    verifies after it. ``at`` is the server's clock in milliseconds when it was written.
    ``xid`` is the stream entry id (known when read from the stream or pub/sub).
    """

    seq: int
    p: int
    kind: Kind
    id: str
    before: int
    until: int
    at: int
    reason: str = ""
    xid: str | None = None
    v: int = WIRE_VERSION

    def to_json(self, *, with_xid: bool = True) -> bytes:
        """The wire JSON (fields in the documented order)."""
        data: dict[str, Any] = {
            "v": self.v,
            "seq": self.seq,
            "p": self.p,
            "kind": self.kind,
            "id": self.id,
            "before": self.before,
            "until": self.until,
            "at": self.at,
            "reason": self.reason,
        }
        if with_xid and self.xid is not None:
            data["xid"] = self.xid
        return orjson.dumps(data)


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EventFormatError(f"event field {name!r} must be a non-negative integer")
    return value


def parse_event(raw: bytes | str, xid: str | None = None) -> Event:
    """Parse and validate one event; ``xid`` overrides one carried in the JSON.

    Raises :class:`UnsupportedEvent` for a future version or an unknown kind (with the
    envelope's seq and partition), :class:`EventFormatError` for anything malformed.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise EventFormatError("event is not JSON") from None
    if not isinstance(data, dict):
        raise EventFormatError("event is not a JSON object")
    v, seq, p = _int(data, "v"), _int(data, "seq"), _int(data, "p")
    if v != WIRE_VERSION:
        raise UnsupportedEvent(f"event version {v} is not supported (this SDK reads v{WIRE_VERSION})", seq=seq, p=p)
    kind = data.get("kind")
    if kind not in KINDS:
        raise UnsupportedEvent(f"event kind {kind!r} is not supported", seq=seq, p=p)
    ident = data.get("id")
    if not isinstance(ident, str) or not 0 < len(ident) <= MAX_ID_LENGTH:
        raise EventFormatError("event field 'id' must be a non-empty string")
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise EventFormatError("event field 'reason' must be a string")
    carried = data.get("xid")
    if xid is None and isinstance(carried, str):
        xid = carried
    return Event(
        seq=seq,
        p=p,
        kind=kind,
        id=ident,
        before=_int(data, "before"),
        until=_int(data, "until"),
        at=_int(data, "at"),
        reason=reason,
        xid=xid,
        v=v,
    )
