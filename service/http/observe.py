"""Per-request observation: request id, access log line, metrics; outermost in the edge middleware.

The request id is the caller's ``X-Request-Id`` when it is well formed (1-64 letters,
digits, ``-`` or ``_``: no ``.``, so neither an access token nor a refresh token can pass
as one and end up in the logs) and the log would show it as it is (not ``twr_...`` or
``eyJ...``), else 16 random hex digits; every answer echoes it.

The access line names the route template, never the raw path (a path or query may carry
anything a client puts there), the status, the duration, the caller (client id or token
sub, set by ``auth``) and what the request's handlers added (a refresh's outcome, a sid).
Probe and scrape routes log at DEBUG so INFO is not mostly kubelet and Prometheus.
An access line costs about as much CPU as answering a constant route (logging's record
plus one write), so ``TOKENWARD_ACCESS_LOG=errors`` keeps only answers >= 400 for
high-volume forward-auth deployments, and ``off`` none; metrics count every request anyway.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import MutableMapping
from typing import Any, Final, NamedTuple

from aiohttp import web

from .. import logs, state

access_log = logging.getLogger("tokenward.access")

REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
QUIET_ROUTES: Final = frozenset({"/healthz", "/readyz", "/metrics"})
#: The route label of answers no route template matched, and the name of the edge's
#: catch-all route that gives them (``http.edge``).
UNMATCHED: Final = "unmatched"
#: The route label of requests refused below routing (``http.protocol``): malformed or oversized heads.
MALFORMED: Final = "malformed"
_CONTEXT_ONLY: Final = frozenset({"request_id", "caller"})


def request_id(request: web.Request) -> str:
    """The caller's well-formed X-Request-Id, or a new random one."""
    incoming = request.headers.get("X-Request-Id")
    # One the log would redact (``twr_...``, ``eyJ...``) is replaced too: the id echoed must
    # be the id the log shows, or nobody can match an answer to its log lines.
    if incoming is not None and REQUEST_ID_RE.fullmatch(incoming) and logs.redact(incoming) == incoming:
        return incoming
    return os.urandom(8).hex()


class Observation(NamedTuple):
    """What ``begin`` opened for a request and ``finish`` closes."""

    start: float
    ctx: dict[str, Any]
    token: Any


def begin(request: web.Request) -> Observation:
    """Open the request's log context and count it in flight."""
    start = time.perf_counter()
    rid = request_id(request)
    request[state.REQUEST_ID] = rid
    ctx, token = logs.begin_request(rid)
    request.app[state.METRICS].in_flight += 1
    return Observation(start, ctx, token)


def finish(request: web.Request, seen: Observation, status: int) -> None:
    """Count, time and log the answer (``status``: what was sent, 499 if abandoned); close the context."""
    seconds = time.perf_counter() - seen.start
    metrics = request.app[state.METRICS]
    metrics.in_flight -= 1
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None and resource.name != UNMATCHED else UNMATCHED
    metrics.observe_request(request.method, route, status, seconds)
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    mode = request.app[state.SETTINGS].access_log
    if (mode == "all" or (mode == "errors" and status >= 400)) and access_log.isEnabledFor(level):
        ms = round(seconds * 1000, 3)
        fields = {"method": request.method, "route": route, "status": status, "duration_ms": ms}
        fields.update((k, v) for k, v in seen.ctx.items() if k not in _CONTEXT_ONLY)
        access_log.log(level, "request", extra={"fields": fields})
    logs.end_request(seen.token)


def tag(request: web.Request, headers: MutableMapping[str, str]) -> None:
    """Echo the request id on an answer: the edge middleware tags every answer it returns or
    lets through; a handler that streams tags its response before ``prepare``.

    Not an ``on_response_prepare`` signal: that costs a coroutine on every answer."""
    rid = request.get(state.REQUEST_ID)
    if rid is not None:
        headers["X-Request-Id"] = rid
