"""Prometheus text exposition of what an SRE watches, without a client library on the hot path.

Counters are plain dict increments keyed by (route, status): a request costs one dict
lookup, not a histogram bisection. Gauges are read when scraped.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from . import __version__


@dataclass(slots=True)
class Metrics:
    """The process's counters and gauge callbacks."""

    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    in_flight: int = 0
    started: float = field(default_factory=time.time)
    gauges: dict[str, tuple[str, Callable[[], float]]] = field(default_factory=dict)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge read at scrape time."""
        self.gauges[name] = (help_text, read)

    def render(self) -> bytes:
        """The Prometheus text format (version 0.0.4)."""
        lines = [
            "# HELP tokenward_info Build information.",
            "# TYPE tokenward_info gauge",
            f'tokenward_info{{version="{__version__}"}} 1',
            "# HELP tokenward_start_time_seconds When the process started (epoch seconds).",
            "# TYPE tokenward_start_time_seconds gauge",
            f"tokenward_start_time_seconds {self.started:.3f}",
            "# HELP tokenward_http_requests_in_flight Requests being handled now.",
            "# TYPE tokenward_http_requests_in_flight gauge",
            f"tokenward_http_requests_in_flight {self.in_flight}",
            "# HELP tokenward_http_requests_total Requests answered, by route and status.",
            "# TYPE tokenward_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(f'tokenward_http_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read():g}"]
        return ("\n".join(lines) + "\n").encode()
