"""Refresh-abuse signals: a session that changes network or agent, or refreshes in bursts.

A stolen refresh token shows itself by being used from somewhere else, or by a client
refreshing far more often than its access tokens' lifetime needs. Every refresh records
the caller's address, network and user agent on the session, and the rotation script
compares them with the previous refresh's in the same atomic step (no extra round trip,
no race between two refreshes). What a mismatch does is TOKENWARD_REFRESH_ANOMALY:

* ``allow``  record the address and agent only;
* ``flag``   (default) the refresh goes ahead; a signal goes to the signals feed
  (``tw:{p}:sg`` stream and the ``tw:signals`` channel, separate from revocation events so
  deny caches never need to understand it), the audit log and the metrics;
* ``revoke`` the session ends as on a detected reuse (every access token it minted is
  denied) and the refresh is refused.

Flag is the default because honest users roam (Wi-Fi to mobile data) and browsers update
their agent string: revoking on those would sign people out every week, while a flag
lets the application step up (ask for the password again) or an SRE look.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

REASONS: Final = ("network", "agent", "burst")
SIGNALS_CHANNEL: Final = "tw:signals"
MAX_AGENT: Final = 256

# A change inside these prefixes is one network (DHCP, privacy addresses), not a move.
_IPV4_PREFIX: Final = 24
_IPV6_PREFIX: Final = 48
# What rotate.lua's v4net matches ('^(%d+%.%d+%.%d+)%.%d+$'): ASCII digits only.
_DOTTED_QUAD_RE: Final = re.compile(r"^([0-9]+\.[0-9]+\.[0-9]+)\.[0-9]+\Z")


@dataclass(frozen=True, slots=True)
class RefreshOrigin:
    """Where a refresh came from, as the rotation script records and compares it."""

    ip: str = ""
    network: str = ""
    user_agent: str = ""

    @classmethod
    def of(cls, ip: str | None, user_agent: str | None) -> RefreshOrigin:
        """Normalise a peer address and a User-Agent header; bad or missing parts stay empty."""
        return cls(ip=normal_ip(ip), network=network_of(ip), user_agent=clean_agent(user_agent))


def normal_ip(ip: str | None) -> str:
    """The address in canonical text form, or '' when it is not one."""
    try:
        return str(ipaddress.ip_address(ip or ""))
    except ValueError:
        return ""


def network_of(ip: str | None) -> str:
    """The /24 (IPv4) or /48 (IPv6) an address belongs to, or '' when it is not an address."""
    try:
        addr = ipaddress.ip_address(ip or "")
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = _IPV4_PREFIX if addr.version == 4 else _IPV6_PREFIX
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def derived_network(ip: str | None) -> str:
    """The network the rotation script derives from an address: the /24 of a dotted quad, else ''.

    Where this equals ``network_of`` (every canonical IPv4 address) the session need not
    store the network; Lua has no address parser, so anything else is stored.
    """
    m = _DOTTED_QUAD_RE.match(ip or "")
    return f"{m[1]}.0/24" if m else ""


def clean_agent(user_agent: str | None) -> str:
    """A User-Agent without control characters, capped: it is stored on the session."""
    if not user_agent:
        return ""
    return "".join(c for c in user_agent[:MAX_AGENT] if c.isprintable())


def parse_reasons(raw: str) -> tuple[str, ...]:
    """The reasons the rotation script returned ('network,agent' -> ('network', 'agent'))."""
    return tuple(r for r in raw.split(",") if r in REASONS)


# A refresh whose origin nobody told us (internal callers, tests).
UNKNOWN_ORIGIN: Final = RefreshOrigin()
