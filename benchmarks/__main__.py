"""``python -m benchmarks [--quick] [--only a,b]``: the suite, a table, JSON and the plot.

Figures (``--only`` takes a comma-separated subset): gateway (forward-auth and
introspection vs ceilings), refresh (rotations and session creations vs the rotation
ceiling), peers (Connection: close variants plus simplejwt / flask-jwt-extended), sweep
(throughput and p99 against concurrency: the plot), memory (Redis bytes per session and
per deny entry), scaling (1 M sessions, 100 k deny entries), sdk (bench_sdk.py, if present).
"""

from __future__ import annotations

import argparse
import sys

from .suite import FIGURES, Options, Suite, plot, save, table


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write benchmarks/results/latest.json and docs/performance.png."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 s rounds, smaller data (~3 min)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(FIGURES))
    args = ap.parse_args(argv)
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(only) - set(FIGURES))
    if unknown:
        ap.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("note: matplotlib is missing, so no plot: .venv/bin/pip install -r benchmarks/requirements.txt",
              file=sys.stderr)  # fmt: skip
    out = Suite(Options.make(args.quick, only)).run()
    path = save(out)
    print(table(out))
    print(plot(out))
    print(f"json: {path}")
    return 0 if all(r["ok"] for r in out["results"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
