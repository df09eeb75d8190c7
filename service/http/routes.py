"""The whole route table in one view."""

from __future__ import annotations

from aiohttp import web

from . import contract, edge, events, gateway, health, oauth, sessions, static


def setup_routes(app: web.Application) -> None:
    """Register every route, each behind the edge (``edge``), and the catch-all after them."""
    table: list[web.RouteDef] = [
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
        # Any segment, "{" and "}" included (aiohttp's default excludes them); "/" and "%"
        # arrive percent-encoded and match_info gives them back decoded.
        web.get("/v1/users/{sub:[^/]+}/sessions", sessions.user_sessions),
        web.delete("/v1/users/{sub:[^/]+}/sessions", sessions.end_user_sessions),
        web.delete("/v1/sessions/{sid}", sessions.end_session),
    ]
    app.router.add_routes([_behind_edge(route) for route in table])
    app.router.add_route("*", edge.UNMATCHED_PATH, edge.around(edge.unmatched), name=edge.UNMATCHED)


def _behind_edge(route: web.RouteDef) -> web.RouteDef:
    handler = route.handler
    if isinstance(handler, type):  # pragma: no cover - no class-based views here
        raise TypeError(f"{route.path}: class-based views are not wrapped by the edge")
    return web.RouteDef(route.method, route.path, edge.around(handler), route.kwargs)
