"""What an SRE watches, as Prometheus metrics (prometheus-client), one registry per app.

Every metric lives in the app's own ``CollectorRegistry`` (never the global one): tests
build many apps in one process, and a registry per app keeps their counts apart.

Hot-path cost. The two metrics touched on every request (request latency, Redis latency)
are ``LoopHistogram`` collectors: plain integer bucket counts keyed by label tuple, written
only from the event loop's thread, so they need none of the locks prometheus-client's
``Histogram`` takes per increment (a bisect and two additions, about 0.5 us instead of
about 4 us for a Counter plus a Histogram); prometheus-client still renders them.
``tokenward_http_requests_total`` is derived from the same counts at scrape time. Values that
exist anyway (in-flight requests, listener state, cache sizes) are read at scrape time too.

Label values are always from closed sets: route templates (never raw paths), known
methods, status codes, outcome/kind/cause names, Redis command names and script names,
exception class names. No token, id or free-form text ever becomes a label.

Key counts (sessions, deny entries) are sampled by ``KeyspaceSampler`` in the background,
never per scrape; see its docstring for how the cost is bounded.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .sdk.events import Event

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

HTTP_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REDIS_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
REFRESH_OUTCOMES: Final = ("rotated", "grace", "recovered", "reuse_detected", "anomaly_revoked", "expired", "invalid")
REVOCATION_KINDS: Final = ("jti", "session", "user")
REVOCATION_CAUSES: Final = ("logout", "reuse", "anomaly", "admin")
ANOMALY_REASONS: Final = ("network", "agent", "burst")
# Reasons the service itself writes; anything else came from an admin's free-form ``reason``.
_CAUSE_OF_REASON: Final = {
    "logout": "logout",
    "logout_all": "logout",
    "revoked": "logout",
    "refresh_token_reuse": "reuse",
    "refresh_anomaly": "anomaly",
}


def cause_of(reason: str) -> str:
    """The bounded cause label for a revocation reason (free-form admin reasons are 'admin')."""
    return _CAUSE_OF_REASON.get(reason, "admin")


class _Callbacks(Collector):
    """Gauges and counters whose values are read from live objects at scrape time."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, Callable[[], float]]] = []

    def collect(self) -> Iterable[Metric]:
        for kind, name, help_text, read in self.items:
            family: Metric
            family = CounterMetricFamily(name, help_text) if kind == "counter" else GaugeMetricFamily(name, help_text)
            family.add_metric([], float(read()))
            yield family


class LoopHistogram(Collector):
    """A labelled histogram for the event loop's thread only: no locks, rendered at scrape.

    ``counts[key]`` holds per-bucket counts (not cumulative; the last slot is +Inf) and
    the sum; ``total_name`` also exports the per-key totals as a counter.
    """

    def __init__(
        self, name: str, help_text: str, labels: tuple[str, ...], buckets: tuple[float, ...], total: str = ""
    ) -> None:
        self.name, self.help, self.labels, self.buckets = name, help_text, labels, buckets
        self.total_name, self.total_help = total, ""
        self.counts: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], seconds: float) -> None:
        """Record one observation for the label values ``key``."""
        row = self.counts.get(key)
        if row is None:
            row = self.counts[key] = [0.0] * (len(self.buckets) + 2)  # buckets, +Inf, sum
        row[bisect.bisect_left(self.buckets, seconds)] += 1
        row[-1] += seconds

    def collect(self) -> Iterable[Metric]:
        hist = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        total = CounterMetricFamily(self.total_name, self.total_help, labels=self.labels) if self.total_name else None
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        for key, row in list(self.counts.items()):
            cumulative, running = [], 0.0
            for bound, n in zip(bounds, row[:-1], strict=True):
                running += n
                cumulative.append((bound, running))
            hist.add_metric(list(key), cumulative, row[-1])
            if total is not None:
                total.add_metric(list(key), running)
        yield hist
        if total is not None:
            yield total


class Metrics:
    """The app's registry and its metrics; see the README for what each one means."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.in_flight = 0
        r = self.registry
        Gauge("tokenward_info", "Build information.", ["version"], registry=r).labels(__version__).set(1)
        Gauge("tokenward_start_time_seconds", "When the process started (epoch seconds).", registry=r).set(time.time())
        Gauge("tokenward_http_requests_in_flight", "Requests being handled now.", registry=r).set_function(
            lambda: self.in_flight
        )
        self.latency = LoopHistogram(
            "tokenward_http_request_duration_seconds",
            "Time from the request reaching the app to its answer, by route template and status.",
            ("method", "route", "status"), HTTP_BUCKETS, total="tokenward_http_requests",
        )  # fmt: skip
        self.latency.total_help = "Requests answered, by route template and status."
        r.register(self.latency)
        self.refresh = Counter("tokenward_refresh", "Refresh-token grants by outcome.", ["outcome"], registry=r)
        self.revocations = Counter(
            "tokenward_revocations",
            "Acknowledged revocations by kind (jti, session, user) and cause (logout, reuse, admin).",
            ["kind", "cause"], registry=r,
        )  # fmt: skip
        self.anomalies = Counter(
            "tokenward_refresh_anomalies",
            "Refreshes from a new network or agent, or in a burst (anomalies.py), by reason and action taken.",
            ["reason", "action"], registry=r,
        )  # fmt: skip
        self.events = Counter(
            "tokenward_events_published", "Revocation events written to the stream and published.", registry=r
        )
        self.redis_errors = Counter(
            "tokenward_redis_errors", "Redis calls that failed, by exception class.", ["kind"], registry=r
        )
        self.redis_latency = LoopHistogram(
            "tokenward_redis_command_duration_seconds",
            "Redis round trips by command (scripts by name), failures included.",
            ("command",), REDIS_BUCKETS,
        )  # fmt: skip
        r.register(self.redis_latency)
        # Registered by the app only in cached deny mode, where the service runs a subscriber.
        self.subscriber_lag = LoopHistogram(
            "tokenward_events_subscriber_lag_seconds",
            "Server write to cache apply, per revocation event the service's own subscriber applied.",
            (), LAG_BUCKETS,
        )  # fmt: skip
        self.keys = Gauge(
            "tokenward_keys",
            "Sampled count of Redis keys by kind (session, user_index, deny_jti, deny_session, "
            "deny_user); exact when the sample covered the whole keyspace.",
            ["kind"], registry=r,
        )  # fmt: skip
        self.keys_coverage = Gauge(
            "tokenward_keys_sample_coverage", "Share of the keyspace the last key sample scanned (1 = exact).",
            registry=r,
        )  # fmt: skip
        self.keys_sampled_at = Gauge(
            "tokenward_keys_sampled_timestamp_seconds", "When the key counts were last sampled.", registry=r
        )
        self._callbacks = _Callbacks()
        r.register(self._callbacks)
        # Every closed-set series starts at 0, so dashboards and alerts see it before its first event.
        for outcome in REFRESH_OUTCOMES:
            self.refresh.labels(outcome)
        for kind in REVOCATION_KINDS:
            for cause in REVOCATION_CAUSES:
                self.revocations.labels(kind, cause)
        for reason in ANOMALY_REASONS:
            for action in ("flag", "revoke"):
                self.anomalies.labels(reason, action)
        for kind in ("ConnectionError", "TimeoutError"):
            self.redis_errors.labels(kind)
        for kind in KEY_KINDS.values():
            self.keys.labels(kind)
        self._request_keys: dict[tuple[str, str, int], tuple[str, str, str]] = {}
        self._refresh_children = {o: self.refresh.labels(o) for o in REFRESH_OUTCOMES}

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge read at scrape time."""
        self._callbacks.items.append(("gauge", name, help_text, read))

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a counter whose total is kept by another object and read at scrape time."""
        self._callbacks.items.append(("counter", name, help_text, read))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answer and its latency."""
        key = (method, route, status)
        labels = self._request_keys.get(key)
        if labels is None:
            labels = self._request_keys[key] = (method if method in METHODS else "other", route, str(status))
        self.latency.observe(labels, seconds)

    def refresh_outcome(self, outcome: str) -> None:
        """Count one refresh grant by outcome (one of ``REFRESH_OUTCOMES``)."""
        self._refresh_children[outcome].inc()

    def refresh_anomaly(self, reasons: Iterable[str], action: str) -> None:
        """Count a flagged (or revoked) refresh once per reason."""
        for reason in reasons:
            self.anomalies.labels(reason, action).inc()

    def revoked(self, kind: str, reason: str, count: int = 1) -> None:
        """Count acknowledged revocations; each one published exactly one event (``_revoke.lua``)."""
        if count > 0:
            self.revocations.labels(kind, cause_of(reason)).inc(count)
            self.events.inc(count)

    def redis_call(self, command: str, seconds: float, error: BaseException | None = None) -> None:
        """Record one Redis round trip (and its failure, if any)."""
        self.redis_latency.observe((command,), seconds)
        if error is not None:
            self.redis_errors.labels(type(error).__name__).inc()

    def event_applied(self, event: Event) -> None:
        """``RevocationListener.on_apply``: how late the subscriber applied an event.

        A histogram, not a gauge of the last event: a catch-up after a reconnect applies old
        events, and a gauge would keep reporting their age until the next revocation.
        """
        self.subscriber_lag.observe((), max(0.0, time.time() - event.at / 1000))

    def render(self) -> bytes:
        """The Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry)


def instrument_redis(client: Any, metrics: Metrics, script_names: dict[str, str]) -> None:
    """Time every command of ``client`` in the one place they all pass: ``execute_command``.

    Scripts arrive as EVALSHA and are labelled by name (``script_names``: sha -> name).
    Pipelines bypass ``execute_command`` and are not timed (two rare admin reads).
    NOSCRIPT is part of the EVALSHA protocol (redis-py loads the script and retries), not a
    failure, so it is timed but not counted as an error.
    """
    inner = client.execute_command
    perf_counter = time.perf_counter

    async def execute_command(*args: Any, **options: Any) -> Any:
        command = args[0] if isinstance(args[0], str) else str(args[0])
        if command == "EVALSHA":
            command = "EVALSHA " + script_names.get(str(args[1]), "other")
        start = perf_counter()
        try:
            result = await inner(*args, **options)
        except Exception as exc:
            seconds = perf_counter() - start
            metrics.redis_call(command, seconds, None if type(exc).__name__ == "NoScriptError" else exc)
            raise
        metrics.redis_call(command, perf_counter() - start)
        return result

    client.execute_command = execute_command


# Key segment after ``tw:{p}:`` -> the ``kind`` label of tokenward_keys (layout in store.py).
KEY_KINDS: Final = {"s": "session", "u": "user_index", "dj": "deny_jti", "ds": "deny_session", "dc": "deny_user"}


@dataclass(frozen=True, slots=True)
class KeySample:
    """One sample: counts by kind (extrapolated unless ``coverage`` is 1) and the share scanned."""

    counts: dict[str, float]
    coverage: float


def classify(keys: Iterable[Any]) -> Iterator[str]:
    """The kind of each Tokenward key (others are skipped)."""
    for raw in keys:
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not key.startswith("tw:{"):
            continue
        _, _, rest = key.partition("}:")
        kind = KEY_KINDS.get(rest.partition(":")[0])
        if kind is not None:
            yield kind


async def sample_keys(client: Any, max_keys: int) -> KeySample:
    """Count keys by kind with at most ``max_keys`` keys scanned (SCAN COUNT 1000 steps).

    When the scan finishes within the bound the counts are exact; otherwise each kind's
    share of the scanned keys is scaled to DBSIZE (O(1)). SCAN returns keys in hash-table
    order, which is unrelated to key names, so the share is a fair estimate.
    """
    counts = dict.fromkeys(KEY_KINDS.values(), 0.0)
    scanned = 0
    complete = True
    batch: list[Any] = []
    async for key in client.scan_iter(count=1000):
        batch.append(key)
        scanned += 1
        if scanned >= max_keys:
            complete = False
            break
    for kind in classify(batch):
        counts[kind] += 1
    if complete:
        return KeySample(counts, 1.0)
    total = int(await client.dbsize())
    if total <= scanned:
        return KeySample(counts, 1.0)
    scale = total / scanned
    return KeySample({k: v * scale for k, v in counts.items()}, scanned / total)


class KeyspaceSampler:
    """Samples key counts every ``interval`` seconds in the background, never per scrape.

    Each sample scans at most ``max_keys`` keys (10 SCAN calls of COUNT 1000 by default),
    so its cost is bounded whatever the keyspace holds: exact for small deployments, an
    estimate scaled to DBSIZE for large ones (``tokenward_keys_sample_coverage`` says which).
    """

    def __init__(self, client: Any, metrics: Metrics, interval: float, max_keys: int = 10_000) -> None:
        self.client = client
        self.metrics = metrics
        self.interval = interval
        self.max_keys = max_keys
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling (first sample right away)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tokenward-key-sampler")

    async def aclose(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def sample_once(self) -> None:
        """Take one sample and publish it."""
        sample = await sample_keys(self.client, self.max_keys)
        for kind, n in sample.counts.items():
            self.metrics.keys.labels(kind).set(round(n))
        self.metrics.keys_coverage.set(sample.coverage)
        self.metrics.keys_sampled_at.set(time.time())

    async def _run(self) -> None:
        while True:
            try:
                await self.sample_once()
            except Exception as exc:  # Redis trouble: the request path reports it; try again later
                log.debug("key sample failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)
