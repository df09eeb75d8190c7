"""The whole route table in one view."""

from __future__ import annotations

from aiohttp import web

from . import contract, events, gateway, health, oauth, sessions, static


def setup_routes(app: web.Application) -> None:
    """Register every route."""
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz),
            web.get("/readyz", health.readyz),
            web.get("/metrics", health.metrics),
            web.get("/openapi.json", contract.openapi),
            web.get("/.well-known/jwks.json", oauth.jwks),
            web.get("/client/tokenward.js", static.client_js),
            web.post("/oauth/token", oauth.token),
            web.post("/oauth/revoke", oauth.revoke),
            web.post("/oauth/introspect", gateway.introspect),
            web.route("*", "/v1/authz", gateway.authz),
            # [\s\S], not ".": any path below, an encoded newline included.
            web.route("*", r"/v1/authz/{tail:[\s\S]*}", gateway.authz),
            web.post("/v1/revocations", sessions.revocations),
            web.get("/v1/revocations", events.revocations),
            web.get("/v1/revocations/events", events.events),
            web.post("/v1/sessions", sessions.create),
            web.get("/v1/me/sessions", sessions.my_sessions),
            web.delete("/v1/me/sessions", sessions.end_my_sessions),
            web.delete("/v1/me/sessions/{sid}", sessions.end_my_session),
            web.get("/v1/users/{sub}/sessions", sessions.user_sessions),
            web.delete("/v1/users/{sub}/sessions", sessions.end_user_sessions),
            web.delete("/v1/sessions/{sid}", sessions.end_session),
        ]
    )
