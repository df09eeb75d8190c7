"""Every typed key for ``app[...]`` and ``request[...]``, in one place."""

from __future__ import annotations

from aiohttp import web

from .clients import Client, ClientRegistry
from .config import Settings
from .fanout import Fanout
from .introspection import Introspector
from .keys import KeyRing
from .metrics import Metrics
from .ratelimit import RateLimiter
from .revocation import Revocations, Revoker
from .sessions import Sessions
from .store import Store
from .tokens import AccessClaims, AccessTokens

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", Store)
KEYRING = web.AppKey("keyring", KeyRing)
TOKENS = web.AppKey("tokens", AccessTokens)
CLIENTS = web.AppKey("clients", ClientRegistry)
SESSIONS = web.AppKey("sessions", Sessions)
REVOCATIONS = web.AppKey("revocations", Revocations)
INTROSPECTOR = web.AppKey("introspector", Introspector)
REVOKER = web.AppKey("revoker", Revoker)
RATELIMITER = web.AppKey("ratelimiter", RateLimiter)
FANOUT = web.AppKey("fanout", Fanout)

CLIENT = web.RequestKey("client", Client)
CLAIMS = web.RequestKey("claims", AccessClaims)
REQUEST_ID = web.RequestKey("request_id", str)
