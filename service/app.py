"""The application factory: wiring only, one cleanup context per resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import state
from .clients import ClientRegistry
from .config import Settings
from .denycache import CachedRevocations
from .events import EventLog
from .fanout import Fanout
from .http.protocol import HANDLER_ARGS
from .http.routes import setup_routes
from .introspection import Introspector
from .keys import KeyRing
from .metrics import KeyspaceSampler, Metrics, instrument_redis
from .ratelimit import RateLimiter
from .revocation import Revocations, Revoker
from .sdk import DenyCache, RevocationListener
from .sessions import Sessions
from .store import open_store
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
    """The store. Redis away at start is not fatal: calls answer 503 until it answers."""
    settings = app[state.SETTINGS]
    store = open_store(settings)
    metrics = app[state.METRICS]
    instrument_redis(store.client, metrics, store.scripts.names())
    app[state.STORE] = store
    app[state.SESSIONS] = Sessions(store, settings, app[state.TOKENS], metrics=metrics)
    app[state.RATELIMITER] = RateLimiter(store)
    if store.kind == "embedded":
        log.warning(
            "DEVELOPMENT ONLY: embedded in-process store and ephemeral signing key; "
            "nothing survives a restart. Set TOKENWARD_REDIS_URL for anything real."
        )
    contact = None
    if not await store.first_contact():
        log.warning("redis unreachable at start; answering 503 until it is back")
        contact = asyncio.create_task(store.first_contact(retry_every=1.0), name="tokenward-first-contact")
    yield
    if contact is not None:
        contact.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await contact
    await store.aclose()


async def _fanout_ctx(app: web.Application) -> AsyncIterator[None]:
    """One reader of the event streams for every SSE stream (``fanout.py``), started by the first."""
    fanout = Fanout(EventLog(app[state.STORE], app[state.SETTINGS]))
    app[state.FANOUT] = fanout
    yield
    await fanout.aclose()


async def _key_sampler_ctx(app: web.Application) -> AsyncIterator[None]:
    """Session and deny-entry counts for /metrics, sampled in the background (bounded SCAN)."""
    sampler = KeyspaceSampler(app[state.STORE].client, app[state.METRICS], app[state.SETTINGS].metrics_interval)
    sampler.start()
    yield
    await sampler.aclose()


async def _revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """The deny checks: strict (Redis per request) or cached (fed by the events listener)."""
    settings, store, metrics = app[state.SETTINGS], app[state.STORE], app[state.METRICS]
    listener = None
    if settings.deny_mode == "cached":
        assert settings.redis_url is not None  # Settings.validate guarantees it
        metrics.registry.register(metrics.subscriber_lag)
        listener = RevocationListener(
            settings.redis_url.value, DenyCache(), partitions=settings.partitions, on_apply=metrics.event_applied
        )
        # With Redis away, start serving anyway: checks fall back to strict ones (503s)
        # until the listener has loaded the deny set.
        await listener.start(wait=10.0 if store.contacted else None)
        cached = CachedRevocations(store, settings, listener, metrics=metrics)
        app[state.REVOCATIONS] = cached
        metrics.gauge(
            "tokenward_events_listener_healthy", "1 when the deny cache is current.", lambda: float(listener.healthy)
        )
        metrics.gauge(
            "tokenward_events_staleness_seconds",
            "Seconds since the deny cache was known current.",
            lambda: min(listener.staleness, 1e9),
        )
        metrics.gauge("tokenward_deny_cache_entries", "Entries in the deny cache.", lambda: float(len(listener.cache)))
        metrics.counter(
            "tokenward_deny_cache_fallbacks",
            "Checks that fell back to Redis.",
            lambda: float(cached.fallbacks),
        )
        metrics.counter(
            "tokenward_events_subscriber_reconnects", "Reconnects of the service's own events subscriber.",
            lambda: float(listener.reconnects),
        )  # fmt: skip
        metrics.counter(
            "tokenward_events_subscriber_reloads", "Full deny-set reloads by the service's own events subscriber.",
            lambda: float(listener.reloads),
        )  # fmt: skip
    else:
        app[state.REVOCATIONS] = Revocations(store, settings, metrics=metrics)
    app[state.INTROSPECTOR] = Introspector(app[state.TOKENS], app[state.REVOCATIONS], app[state.SESSIONS])
    app[state.REVOKER] = Revoker(app[state.TOKENS], app[state.SESSIONS], app[state.REVOCATIONS])
    yield
    if listener is not None:
        await listener.aclose()


def create_app(
    settings: Settings, *, keyring: KeyRing | None = None, clients: ClientRegistry | None = None
) -> web.Application:
    """Build the application; resources open in ``cleanup_ctx`` order and close in reverse."""
    # No middlewares: every route handler is wrapped by the edge (``http.edge``) instead.
    # The request-head limits and no body inflation, for every server of the app (http.protocol).
    app = web.Application(client_max_size=settings.max_body_bytes, handler_args=HANDLER_ARGS)
    app[state.SETTINGS] = settings
    app[state.METRICS] = Metrics()
    ring = keyring or load_keyring(settings)
    app[state.KEYRING] = ring
    app[state.TOKENS] = AccessTokens(ring, settings.issuer, settings.audience, settings.access_ttl, settings.leeway)
    app[state.CLIENTS] = clients or load_clients(settings)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_revocations_ctx)
    app.cleanup_ctx.append(_key_sampler_ctx)
    app.cleanup_ctx.append(_fanout_ctx)
    setup_routes(app)
    return app
