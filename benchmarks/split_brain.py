"""``python -m benchmarks.split_brain [--duration 600]``: the split-brain soak (issue 16).

The harness of ``tests/support/split_brain.py`` for as long as asked: faults in turn (pause,
sigstop, kill-primary, kill-service, again and again) with ``--settle`` seconds of load after
each, then the invariant counts and the 503 windows per fault. Exit 1 when an invariant broke.

``--service-root`` runs another checkout's service code (``git archive <commit> service | tar
-x -C DIR``) to compare; ``--min-replicas-to-write 0`` the Redis configuration shipped before.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from pathlib import Path

from tests.support.split_brain import RedisConfig, run_once

FAULTS = ("pause", "sigstop", "kill-primary", "kill-service")


def main(argv: list[str] | None = None) -> int:
    """Run, print the report, exit 1 on any violation."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.split_brain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--duration", type=float, default=600, help="seconds of faults and load (default 600)")
    ap.add_argument("--settle", type=float, default=10, help="seconds of load after each fault settled")
    ap.add_argument("--faults", default=",".join(FAULTS), help="the cycle, comma-separated: " + ",".join(FAULTS))
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--think", type=float, default=0.2, help="mean pause between a user's steps, seconds")
    ap.add_argument("--redis-timeout", type=float, default=1.0, help="TOKENWARD_REDIS_TIMEOUT")
    ap.add_argument("--wait-replicas", type=int, default=1, help="TOKENWARD_WAIT_REPLICAS")
    ap.add_argument("--min-replicas-to-write", type=int, default=1)
    ap.add_argument("--min-replicas-max-lag", type=int, default=None, help="default: 2 x the Redis timeout, >= 2")
    ap.add_argument("--topology", choices=("sentinel", "cluster"), default="sentinel",
                    help="cluster: three primaries with one replica each; faults hit slot 0's primary")  # fmt: skip
    ap.add_argument("--service-root", type=Path, default=None, help="a directory holding another service/ package")
    args = ap.parse_args(argv)
    cycle = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(cycle) - set(FAULTS))
    if unknown:
        ap.error(f"unknown fault(s) {unknown}; choose from {', '.join(FAULTS)}")
    recommended = RedisConfig.for_timeout(args.redis_timeout)
    lag = args.min_replicas_max_lag if args.min_replicas_max_lag is not None else recommended.min_replicas_max_lag
    # Each fault takes about 25 s to settle (the sentinels demote the old primary after 8 s,
    # then it resyncs) plus the settle time.
    rounds = max(1, int(args.duration // (25 + args.settle)))
    faults = list(itertools.islice(itertools.cycle(cycle), rounds))
    extra = {"service_root": args.service_root} if args.service_root else {}
    report = asyncio.run(
        run_once(
            faults=faults,
            settle=args.settle,
            users=args.users,
            think=args.think,
            redis=RedisConfig(args.min_replicas_to_write, lag),
            redis_timeout=args.redis_timeout,
            log=lambda line: print(line, flush=True),
            topology=args.topology,
            wait_replicas=args.wait_replicas,
            **extra,
        )
    )
    print("\n".join(report.lines()))
    broken = report.accepted or report.undone or sum(report.unexpected.values())
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
