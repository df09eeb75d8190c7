"""The application factory: wiring only, one cleanup context per resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import state
from .clients import ClientRegistry
from .config import Settings
from .denycache import CachedRevocations
from .http.cors import cors_middleware
from .http.middlewares import error_middleware, metrics_middleware
from .http.routes import setup_routes
from .introspection import Introspector
from .keys import KeyRing
from .metrics import Metrics
from .revocation import Revocations, Revoker
from .sdk import DenyCache, RevocationListener
from .sessions import Sessions
from .store import connect
from .tokens import AccessTokens

log = logging.getLogger("tokenward")

DEV_CLIENT = ("dev", "dev-secret")


def load_keyring(settings: Settings) -> KeyRing:
    """The configured keys, or an ephemeral one in embedded development mode."""
    if settings.keys_dir is None:
        return KeyRing.ephemeral()
    return KeyRing.from_dir(settings.keys_dir, settings.signing_kid)


def load_clients(settings: Settings) -> ClientRegistry:
    """The configured clients, or the development client in embedded mode."""
    if settings.clients_file is None:
        return ClientRegistry.development(*DEV_CLIENT)
    return ClientRegistry.from_file(settings.clients_file)


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[state.SETTINGS]
    store = await connect(settings)
    app[state.STORE] = store
    app[state.SESSIONS] = Sessions(store, settings, app[state.TOKENS])
    if store.kind == "embedded":
        log.warning(
            "DEVELOPMENT ONLY: embedded in-process store and ephemeral signing key; "
            "nothing survives a restart. Set TOKENWARD_REDIS_URL for anything real."
        )
    yield
    await store.aclose()


async def _revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """The deny checks: strict (Redis per request) or cached (fed by the events listener)."""
    settings, store = app[state.SETTINGS], app[state.STORE]
    listener = None
    if settings.deny_mode == "cached":
        assert settings.redis_url is not None  # Settings.validate guarantees it
        listener = RevocationListener(settings.redis_url.value, DenyCache(), partitions=settings.partitions)
        await listener.start()
        cached = CachedRevocations(store, settings, listener)
        app[state.REVOCATIONS] = cached
        metrics = app[state.METRICS]
        metrics.gauge(
            "tokenward_events_listener_healthy", "1 when the deny cache is current.", lambda: float(listener.healthy)
        )
        metrics.gauge(
            "tokenward_events_staleness_seconds",
            "Seconds since the deny cache was known current.",
            lambda: min(listener.staleness, 1e9),
        )
        metrics.gauge("tokenward_deny_cache_entries", "Entries in the deny cache.", lambda: float(len(listener.cache)))
        metrics.gauge(
            "tokenward_deny_cache_fallbacks",
            "Checks that fell back to Redis (counter).",
            lambda: float(cached.fallbacks),
        )
    else:
        app[state.REVOCATIONS] = Revocations(store, settings)
    app[state.INTROSPECTOR] = Introspector(app[state.TOKENS], app[state.REVOCATIONS], app[state.SESSIONS])
    app[state.REVOKER] = Revoker(app[state.TOKENS], app[state.SESSIONS], app[state.REVOCATIONS])
    yield
    if listener is not None:
        await listener.aclose()


def create_app(
    settings: Settings, *, keyring: KeyRing | None = None, clients: ClientRegistry | None = None
) -> web.Application:
    """Build the application; resources open in ``cleanup_ctx`` order and close in reverse."""
    # CORS outside the error middleware, so error answers carry the CORS headers too.
    app = web.Application(
        middlewares=[metrics_middleware, cors_middleware, error_middleware], client_max_size=settings.max_body_bytes
    )
    app[state.SETTINGS] = settings
    app[state.METRICS] = Metrics()
    ring = keyring or load_keyring(settings)
    app[state.KEYRING] = ring
    app[state.TOKENS] = AccessTokens(ring, settings.issuer, settings.audience, settings.access_ttl, settings.leeway)
    app[state.CLIENTS] = clients or load_clients(settings)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_revocations_ctx)
    setup_routes(app)
    return app
