"""The figures of ``python -m benchmarks``: what is measured, in which order, and the report.

Every comparison is a ratio measured in the same run with A and B interleaved round by
round (round 1 A, round 1 B, round 2 A, ...); each figure is the median over the rounds
with min/max beside it. The peers (run_peers.py) are one block per run: their harness
starts and stops gunicorn and a database, which cannot be interleaved per round.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import harness as h

RESULTS = Path(__file__).resolve().parent / "results"
PLOT = Path(__file__).resolve().parents[1] / "docs" / "performance.png"
FIGURES = ("gateway", "refresh", "memory", "scaling", "sweep", "peers", "sdk")


@dataclass
class Options:
    """How long and how hard: full run or --quick smoke run."""

    quick: bool = False
    rounds: int = 3
    duration: float = 5.0
    sweep_duration: float = 3.0
    connections: int = 32
    sweep: tuple[int, ...] = (8, 32, 128)
    access_tokens: int = 200_000
    memory_n: int = 100_000
    big_sessions: int = 1_000_000
    deny_entries: int = 100_000
    peer_duration: int = 5
    only: tuple[str, ...] = FIGURES

    @classmethod
    def make(cls, quick: bool, only: Sequence[str]) -> Options:
        o = cls(only=tuple(only) or FIGURES)
        if quick:
            o.quick = True
            o.duration, o.sweep_duration = 2.0, 1.0
            o.access_tokens, o.memory_n = 60_000, 20_000
            o.big_sessions, o.deny_entries = 100_000, 20_000
            o.peer_duration = 2
        return o


@dataclass
class Pool:
    """Single-use tokens handed to wrk runs in disjoint slices; refilled on demand."""

    name: str
    refill: Callable[[int], list[str]] | None
    tokens: list[str] = field(default_factory=list)
    cursor: int = 0
    workdir: Path = Path("/tmp")

    def take(self, n: int) -> Path:
        left = len(self.tokens) - self.cursor
        if left < n:
            if self.refill is None:
                # Access tokens may be used again: start over from the oldest. The service's
                # verified-token cache holds 10,000 entries, so a token last seen 100,000+
                # requests ago is verified afresh, as a new token would be.
                self.cursor = 0
                n = min(n, len(self.tokens))
            else:
                self.tokens += self.refill(n - left)
        path = self.workdir / f"{self.name}.txt"
        return h.write_lines(path, self.tokens[self.cursor : self.cursor + n])

    def spent(self, n: int) -> None:
        self.cursor += n


@dataclass
class Series:
    """One thing measured: a URL and how wrk drives it."""

    key: str
    label: str
    url: str
    method: str = "GET"
    where: str = "none"
    value: str = "-"
    headers: tuple[str, ...] = ()
    pool: Pool | None = None
    rate_guess: float = 3000.0

    def run(self, connections: int, duration: float) -> h.WrkResult:
        value = self.value
        if self.pool is not None:
            need = int(self.rate_guess * duration * 1.6) + 2000
            value = str(self.pool.take(need))
        r = h.wrk(
            self.url,
            method=self.method,
            where=self.where,
            value=value,
            headers=self.headers,
            connections=connections,
            duration=duration,
        )
        if self.pool is not None:
            self.pool.spent(int(r.raw["used"]))
        if r.rps:
            self.rate_guess = max(self.rate_guess * 0.5, r.rps)
        return r


def summarise(runs: Sequence[h.WrkResult]) -> dict[str, Any]:
    """Median and min/max over rounds, plus every round and the error count."""
    return {
        "rps": h.spread([r.rps for r in runs]),
        "p50_ms": h.spread([r.p50_ms for r in runs]),
        "p99_ms": h.spread([r.p99_ms for r in runs]),
        "rounds": [{"rps": round(r.rps, 1), "p50_ms": r.p50_ms, "p99_ms": r.p99_ms} for r in runs],
        "errors": sum(r.errors for r in runs),
        "exhausted": sum(r.exhausted for r in runs),
        "first_error": next((r.first_err for r in runs if r.first_err), ""),
        "ok": all(r.ok for r in runs),
    }


def interleave(
    series: Sequence[Series], rounds: int, connections: int, duration: float, warmup: float = 1.0
) -> dict[str, dict[str, Any]]:
    """Warm each series up once, then round 1 of every series, round 2 of every series, ..."""
    for s in series:
        s.run(connections, warmup)
    runs: dict[str, list[h.WrkResult]] = {s.key: [] for s in series}
    for rnd in range(rounds):
        for s in series:
            r = s.run(connections, duration)
            runs[s.key].append(r)
            flag = "" if r.ok else f"  !!! errors={r.errors} exhausted={r.exhausted} {r.first_err[:80]}"
            print(
                f"    round {rnd + 1} c={connections:<4} {s.key:<28} {r.rps:9.0f} req/s "
                f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:7.2f} ms{flag}",
                file=sys.stderr,
                flush=True,
            )
    return {k: summarise(v) | {"label": next(s.label for s in series if s.key == k)} for k, v in runs.items()}


def ratio(results: dict[str, dict[str, Any]], a: str, b: str) -> dict[str, float] | None:
    """A/B per round (the rounds were interleaved), then median and min/max of the ratios."""
    if a not in results or b not in results:
        return None
    ra, rb = results[a]["rounds"], results[b]["rounds"]
    values = [x["rps"] / y["rps"] for x, y in zip(ra, rb, strict=False) if y["rps"]]
    return h.spread(values) if values else None


def deny_mode_setting() -> str | None:
    """The settings field of the events-fed deny cache, when another helper has landed it."""
    from service.config import Settings

    for name in ("deny_mode", "deny_cache", "revocation_mode"):
        if name in Settings.__dataclass_fields__:
            return name
    return None


# --------------------------------------------------------------------------- figures


class Suite:
    """Runs the selected figures against one stack and collects one JSON document."""

    def __init__(self, opts: Options) -> None:
        self.o = opts
        self.out: dict[str, Any] = {"machine": h.machine(), "options": opts.__dict__ | {"only": list(opts.only)}}
        self.results: dict[str, dict[str, Any]] = {}
        self.stack: h.Stack | None = None
        self.t0 = time.monotonic()

    # ---- setup

    def start(self) -> h.Stack:
        with h.timed("starting redis-server, tokenward serve, ceiling app"):
            self.stack = h.Stack.start()
        st = self.stack
        self.workdir = st.workdir
        pair = h.login(st.tw)
        self.access = pair["access_token"]
        self.settings = st.settings
        client = st.client()
        self.tw_refresh = Pool(
            "tw-refresh", lambda n: h.create_sessions(client, n, "bench-tw-", self.settings), workdir=st.workdir
        )
        self.ceil_refresh = Pool(
            "ceil-refresh", lambda n: h.create_sessions(client, n, "bench-ceil-", self.settings), workdir=st.workdir
        )
        return st

    def access_pool(self) -> Pool:
        if not hasattr(self, "_access_pool"):
            with h.timed(f"minting {self.o.access_tokens} RS256 access tokens (2 processes)"):
                assert self.stack is not None
                tokens = h.mint_access_tokens(self.stack.ring.signer, self.o.access_tokens)
            self._access_pool = Pool("access", None, tokens, workdir=self.workdir)
        return self._access_pool

    def series(self) -> dict[str, Series]:
        """Every series the figures draw from, by key."""
        st = self.stack
        assert st is not None
        gw = "Authorization: " + h.basic("gateway")
        close = "Connection: close"
        tw, ceil = st.tw, st.ceil
        s = {
            "ceiling.const": Series("ceiling.const", "ceiling: constant JSON", ceil + "/const"),
            "ceiling.get": Series("ceiling.get", "ceiling: one Redis GET", ceil + "/get"),
            "ceiling.rotate": Series(
                "ceiling.rotate",
                "ceiling: rotate.lua + RS256 sign",
                ceil + "/rotate",
                "POST",
                "form-file:grant_type=refresh_token&refresh_token=",
                pool=self.ceil_refresh,
                rate_guess=1500,
            ),
            "authz.same": Series("authz.same", "forward-auth, same token", tw + "/v1/authz", where="bearer",
                                 value=self.access),
            "introspect.same": Series("introspect.same", "introspection, same token", tw + "/oauth/introspect",
                                      "POST", "form:token=", self.access, (gw,)),
            "refresh": Series("refresh", "refresh rotation", tw + "/oauth/token", "POST",
                              "form-file:grant_type=refresh_token&refresh_token=", pool=self.tw_refresh,
                              rate_guess=1000),
            "create": Series("create", "session creation", tw + "/v1/sessions", "POST", "body",
                             str(self._create_body()), ("Authorization: " + h.basic("login"),
                                                         "Content-Type: application/json"), rate_guess=1000),
            "authz.same.close": Series("authz.same.close", "forward-auth, same token, Connection: close",
                                       tw + "/v1/authz", where="bearer", value=self.access, headers=(close,)),
            "refresh.close": Series("refresh.close", "refresh rotation, Connection: close", tw + "/oauth/token",
                                    "POST", "form-file:grant_type=refresh_token&refresh_token=",
                                    headers=(close,), pool=self.tw_refresh, rate_guess=1000),
            "ceiling.const.close": Series("ceiling.const.close", "ceiling: constant JSON, Connection: close",
                                          ceil + "/const", headers=(close,)),
        }  # fmt: skip
        return s

    def _create_body(self) -> Path:
        path = self.workdir / "create.json"
        path.write_text(json.dumps({"sub": "bench-create", "scope": "read write", "device": {"name": "laptop"}}))
        return path

    def new_token_series(self) -> dict[str, Series]:
        st = self.stack
        assert st is not None
        pool = self.access_pool()
        gw = "Authorization: " + h.basic("gateway")
        return {
            "authz.new": Series("authz.new", "forward-auth, new token each request", st.tw + "/v1/authz",
                                where="bearer-file", pool=pool, rate_guess=5000),
            "introspect.new": Series("introspect.new", "introspection, new token each request",
                                     st.tw + "/oauth/introspect", "POST", "form-file:token=", headers=(gw,),
                                     pool=pool, rate_guess=4000),
        }  # fmt: skip

    # ---- figures

    def fig_gateway(self) -> None:
        """Figure 1: forward-auth and introspection, same token and new token, strict mode, vs ceilings."""
        o = self.o
        s = self.series() | self.new_token_series()
        keys = ["ceiling.const", "ceiling.get", "authz.same", "authz.new", "introspect.same", "introspect.new"]
        with h.timed("figure 1: forward-auth / introspection (strict)"):
            res = interleave([s[k] for k in keys], o.rounds, o.connections, o.duration)
        self.results.update({f"strict.{k}" if not k.startswith("ceiling") else k: v for k, v in res.items()})
        field_name = deny_mode_setting()
        if field_name is None:
            self.out["cached_mode"] = "not yet measured: no deny-cache setting in service/config.py"
            return
        self.out["cached_mode"] = f"measured with TOKENWARD_{field_name.upper()}=cached"
        assert self.stack is not None
        self.stack.restart_service({f"TOKENWARD_{field_name.upper()}": "cached"})
        try:
            s = self.series() | self.new_token_series()
            with h.timed("figure 1: cached mode"):
                res = interleave([s[k] for k in keys], o.rounds, o.connections, o.duration)
            # The cached rounds keep their own ceilings: ratios pair rounds that ran side by side.
            self.results.update({f"cached.{k}": v for k, v in res.items()})
        finally:
            self.stack.restart_service({})

    def fig_refresh(self) -> None:
        """Figure 2: refresh rotations and session creations, vs the rotation ceiling."""
        o = self.o
        s = self.series()
        with h.timed("figure 2: refresh / session creation"):
            res = interleave([s["ceiling.rotate"], s["refresh"], s["create"]], o.rounds, o.connections, o.duration)
        self.results.update(res)

    def fig_close(self) -> None:
        """The peers' model: one request per connection (gunicorn sync has no keep-alive)."""
        o = self.o
        s = self.series()
        keys = ["ceiling.const.close", "authz.same.close", "refresh.close"]
        with h.timed("Connection: close variants (for the peer comparison)"):
            self.results.update(interleave([s[k] for k in keys], o.rounds, o.connections, o.duration))

    def fig_sweep(self) -> None:
        """Throughput and p99 against concurrency, Tokenward beside its ceilings (the plot)."""
        o = self.o
        s = self.series()
        keys = ["ceiling.const", "ceiling.get", "authz.same", "ceiling.rotate", "refresh"]
        sweep: dict[str, dict[str, Any]] = {}
        with h.timed(f"concurrency sweep {o.sweep}"):
            for c in o.sweep:
                res = interleave([s[k] for k in keys], o.rounds, c, o.sweep_duration, warmup=1)
                sweep[str(c)] = res
        self.out["sweep"] = sweep

    def fig_memory(self) -> None:
        """Figure 5: Redis bytes per session (0, 1, 10 rotations) and per deny entry."""
        from .memory import measure

        with h.timed(f"figure 5: memory over {self.o.memory_n} sessions / deny entries"):
            self.out["memory"] = measure(self.o.memory_n, self.settings)

    def fig_scaling(self) -> None:
        """Figure 6: forward-auth (strict, same token) and refresh as Redis fills up."""
        o = self.o
        st = self.stack
        assert st is not None
        client = st.client()
        s = self.series()
        levels: dict[str, dict[str, Any]] = {}
        client.flushall()
        fresh = Pool("scale-refresh", lambda n: h.create_sessions(client, n, "bench-scale-", self.settings),
                     workdir=st.workdir)  # fmt: skip
        refresh = Series("refresh", "refresh rotation", st.tw + "/oauth/token", "POST",
                         "form-file:grant_type=refresh_token&refresh_token=", pool=fresh,
                         rate_guess=self.results.get("refresh", {}).get("rps", {}).get("median", 1000))  # fmt: skip
        duration = o.sweep_duration
        base_sessions = 10_000
        steps: list[tuple[str, Callable[[], None]]] = [
            ("10k sessions", lambda: h.fill_sessions(client, 0, base_sessions, self.settings)),
            (f"{o.big_sessions // 1000}k sessions",
             lambda: h.fill_sessions(client, base_sessions, o.big_sessions - base_sessions, self.settings)),
            (f"{o.big_sessions // 1000}k sessions + {o.deny_entries // 1000}k deny entries",
             lambda: h.fill_denies(client, 0, o.deny_entries, int(time.time()) + 3600)),
        ]  # fmt: skip
        for name, load in steps:
            with h.timed(f"figure 6: loading to {name}"):
                load()
            # The refresh sessions are created before the run so the counts below include them.
            fresh.take(int(refresh.rate_guess * duration * 1.6 * o.rounds) + 2000)
            with h.timed(f"figure 6: measuring at {name}"):
                res = interleave([s["authz.same"], refresh], o.rounds, o.connections, duration, warmup=1)
            info = client.info("memory")
            levels[name] = {
                "live_session_hashes": _count(client, "tw:{0}:s:*"),
                "live_deny_entries": _count(client, "tw:{0}:dj:*"),
                "dbsize": client.dbsize(),
                "used_memory": info["used_memory"],
                **res,
            }
        client.flushall()
        self.out["scaling"] = levels

    def fig_peers(self) -> None:
        """simplejwt and flask-jwt-extended, by their own runner, same machine, same wrk, 1 worker."""
        sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
        try:
            import run_peers  # type: ignore[import-not-found]

            with h.timed("peers (benchmarks/peers/run_peers.py)"):
                out = run_peers.run(
                    workers=1,
                    duration=self.o.peer_duration,
                    warmup=1,
                    connections=self.o.connections,
                    only="simplejwt_refresh,simplejwt_verify,flask_refresh,flask_refresh_rotate,flask_protected",
                )
            self.out["peers"] = out
        except Exception as exc:  # the peers need PostgreSQL and a venv: report, never abort the suite
            self.out["peers"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  !!! peers failed: {exc}", file=sys.stderr)

    def fig_sdk(self) -> None:
        """Figures 3-4: SDK cost and propagation in one process (bench_sdk.py), then propagation
        with the subscribers spread over processes as resource servers are (bench_propagation.py)."""
        import subprocess

        for name, module in (("sdk", "benchmarks.bench_sdk"), ("propagation", "benchmarks.bench_propagation")):
            with h.timed(f"figures 3-4: {module}"):
                args = [sys.executable, "-m", module]
                r = subprocess.run(args, cwd=h.ROOT, capture_output=True, text=True, timeout=900, check=False)
            self.out[name] = {"returncode": r.returncode, "stdout": r.stdout[-8000:], "stderr": r.stderr[-2000:]}

    # ---- driver

    def run(self) -> dict[str, Any]:
        only = self.o.only
        self.start()
        try:
            if "gateway" in only:
                self.fig_gateway()
            if "refresh" in only:
                self.fig_refresh()
            if "peers" in only:
                self.fig_close()
                self.fig_peers()
            if "sweep" in only:
                self.fig_sweep()
            if "memory" in only:
                self.fig_memory()
            if "scaling" in only:
                self.fig_scaling()
            if "sdk" in only:
                self.fig_sdk()
        finally:
            assert self.stack is not None
            self.stack.close()
        self.out["results"] = self.results
        self.out["ratios"] = self.ratios()
        self.out["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        return self.out

    def ratios(self) -> dict[str, Any]:
        r = self.results
        out: dict[str, Any] = {
            "authz.same / ceiling.const": ratio(r, "strict.authz.same", "ceiling.const"),
            "authz.same / ceiling.get": ratio(r, "strict.authz.same", "ceiling.get"),
            "authz.new / ceiling.get": ratio(r, "strict.authz.new", "ceiling.get"),
            "introspect.same / ceiling.get": ratio(r, "strict.introspect.same", "ceiling.get"),
            "introspect.new / ceiling.get": ratio(r, "strict.introspect.new", "ceiling.get"),
            "refresh / ceiling.rotate": ratio(r, "refresh", "ceiling.rotate"),
            "cached authz.same / ceiling.const": ratio(r, "cached.authz.same", "cached.ceiling.const"),
            "authz.same.close / ceiling.const.close": ratio(r, "authz.same.close", "ceiling.const.close"),
        }
        peers = self.out.get("peers", {}).get("results", {})

        def peer(name: str) -> float | None:
            v = peers.get(name)
            return float(v["requests_per_sec"]) if v and v.get("ok") and v["requests_per_sec"] else None

        for ours, theirs in (
            ("refresh", "simplejwt_refresh"),
            ("refresh.close", "simplejwt_refresh"),
            ("refresh", "flask_refresh_rotate"),
            ("refresh.close", "flask_refresh_rotate"),
            ("strict.authz.same", "flask_protected"),
            ("authz.same.close", "flask_protected"),
            ("strict.authz.same", "simplejwt_verify"),
            ("authz.same.close", "simplejwt_verify"),
        ):
            p = peer(theirs)
            if p and ours in r:
                out[f"{ours} / peer {theirs}"] = {
                    k: v / p for k, v in r[ours]["rps"].items() if isinstance(v, float | int)
                }
        return out


def _count(client: Any, pattern: str) -> int:
    """Keys matching a pattern, by SCAN (bounded work per call, no KEYS)."""
    n = 0
    for _ in client.scan_iter(match=pattern, count=10_000):
        n += 1
    return n


# --------------------------------------------------------------------------- report


def fmt_spread(s: dict[str, float], digits: int = 0, scale: float = 1.0) -> str:
    return f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f})"


def table(out: dict[str, Any]) -> str:
    """The Markdown table of the run (also what the README shows)."""
    m = out["machine"]
    r = out.get("results", {})
    ratios = out.get("ratios", {})
    o = out["options"]
    lines = [
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}, "
        f"redis-server {m['versions'].get('redis-server', '?')}, {m['versions'].get('wrk', 'wrk')}. "
        f"wrk -t1 -c{o['connections']}, {o['rounds']} interleaved rounds of {o['duration']:g} s; "
        "median (min-max) over rounds.",
        "",
        "| figure | req/s | p50 ms | p99 ms | vs ceiling (per-round ratio) |",
        "|---|---:|---:|---:|---|",
    ]
    rel = {
        "strict.authz.same": ("authz.same / ceiling.get", "one-GET"),
        "strict.authz.new": ("authz.new / ceiling.get", "one-GET"),
        "strict.introspect.same": ("introspect.same / ceiling.get", "one-GET"),
        "strict.introspect.new": ("introspect.new / ceiling.get", "one-GET"),
        "cached.authz.same": ("cached authz.same / ceiling.const", "constant-JSON"),
        "refresh": ("refresh / ceiling.rotate", "rotate+sign"),
        "authz.same.close": ("authz.same.close / ceiling.const.close", "constant-JSON, close"),
    }
    for key, res in r.items():
        label = ("[strict] " if key.startswith("strict.") else "[cached] " if key.startswith("cached.") else "") + res[
            "label"
        ]
        vs = ""
        if key in rel and ratios.get(rel[key][0]):
            vs = f"{fmt_spread(ratios[rel[key][0]], 0, 100)} % of {rel[key][1]}"
        bad = "" if res["ok"] else f" **!! {res['errors']} errors, {res['exhausted']} exhausted**"
        lines.append(
            f"| {label}{bad} | {fmt_spread(res['rps'])} | {fmt_spread(res['p50_ms'], 2)} | "
            f"{fmt_spread(res['p99_ms'], 2)} | {vs} |"
        )
    if "cached_mode" in out and not any(k.startswith("cached.") for k in r):
        lines.append(f"| [cached] forward-auth / introspection | — | — | — | {out['cached_mode']} |")
    peers = out.get("peers", {})
    if "results" in peers:
        lines += ["", "Peers (gunicorn sync x1, no keep-alive; same wrk, same connections):", ""]
        lines += ["| peer figure | req/s | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
        for name, p in peers["results"].items():
            flag = "" if p["ok"] else " **!! errors**"
            lines.append(f"| {name}{flag} | {p['requests_per_sec']:.0f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} |")
        lines += ["", "| Tokenward / peer | ratio (median, min-max over Tokenward rounds) |", "|---|---|"]
        for k, v in ratios.items():
            if " / peer " in k and v:
                lines.append(f"| {k} | {fmt_spread(v, 1)}x |")
    elif "error" in peers:
        lines += ["", f"Peers: not measured ({peers['error']})"]
    mem = out.get("memory")
    if mem:
        lines += ["", f"Redis memory (used_memory deltas over {mem['n']:,} each):", ""]
        lines += ["| state | bytes each |", "|---|---:|"]
        for k, v in mem["bytes"].items():
            lines.append(f"| {k} | {v:.0f} |")
    sc = out.get("scaling")
    if sc:
        lines += ["", "Scaling (per-operation cost as Redis fills up):", ""]
        lines += [
            "| Redis holds | session hashes | deny entries | used_memory MB | forward-auth req/s | p99 ms "
            "| refresh req/s | p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, lv in sc.items():
            a, f = lv["authz.same"], lv["refresh"]
            lines.append(
                f"| {name} | {lv['live_session_hashes']:,} | {lv['live_deny_entries']:,} | "
                f"{lv['used_memory'] / 2**20:.0f} | {fmt_spread(a['rps'])} | {fmt_spread(a['p99_ms'], 2)} | "
                f"{fmt_spread(f['rps'])} | {fmt_spread(f['p99_ms'], 2)} |"
            )
    for name, title in (("sdk", "SDK cost and propagation, one process"), ("propagation", "Propagation, spread")):
        run = out.get(name)
        if isinstance(run, dict):
            lines += ["", f"{title} (figures 3-4, `python -m benchmarks.bench_{name}`):", "", "```"]
            lines += [x for x in run["stdout"].splitlines() if x.strip()]
            lines += ["```"]
    lines += ["", f"Whole run: {out.get('elapsed_s', 0):.0f} s."]
    return "\n".join(lines)


def plot(out: dict[str, Any], path: Path = PLOT) -> str:
    """docs/performance.png: throughput and p99 against connections; a message if matplotlib is missing."""
    sweep = out.get("sweep")
    if not sweep:
        return "plot: skipped (no sweep in this run)"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot: matplotlib is missing: .venv/bin/pip install -r benchmarks/requirements.txt"
    conns = sorted(int(c) for c in sweep)
    groups = [
        ("forward-auth", [("authz.same", "Tokenward /v1/authz (strict)", "C0", "-"),
                          ("ceiling.get", "ceiling: one Redis GET", "C1", "--"),
                          ("ceiling.const", "ceiling: constant JSON", "C2", ":")], "flask_protected"),
        ("refresh", [("refresh", "Tokenward /oauth/token", "C0", "-"),
                     ("ceiling.rotate", "ceiling: rotate.lua + RS256", "C1", "--")], "simplejwt_refresh"),
    ]  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    peers = out.get("peers", {}).get("results", {})
    for row, (title, lines, peer_name) in enumerate(groups):
        for col, metric in enumerate(("rps", "p99_ms")):
            ax = axes[row][col]
            for key, label, color, style in lines:
                ys = [sweep[str(c)][key][metric]["median"] for c in conns]
                lo = [sweep[str(c)][key][metric]["min"] for c in conns]
                hi = [sweep[str(c)][key][metric]["max"] for c in conns]
                ax.plot(conns, ys, style, color=color, marker="o", label=label)
                ax.fill_between(conns, lo, hi, color=color, alpha=0.15)
            for pname, marker in ((peer_name, "s"), ("simplejwt_verify" if row == 0 else "flask_refresh_rotate", "^")):
                p = peers.get(pname)
                if p and p.get("ok"):
                    value = p["requests_per_sec"] if metric == "rps" else p["p99_ms"]
                    ax.plot([p["connections"]], [value], marker, color="C3" if marker == "s" else "C4",
                            label=f"peer: {pname} (gunicorn sync x1)")  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_xticks(conns, [str(c) for c in conns])
            ax.set_xlabel("connections (wrk -t1)")
            ax.set_ylabel("requests/s" if metric == "rps" else "p99 latency, ms")
            if metric == "p99_ms":
                ax.set_yscale("log")
            ax.set_title(f"{title}: {'throughput' if metric == 'rps' else 'p99 latency'}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    m = out["machine"]
    fig.suptitle(f"Tokenward vs its ceilings, one process, {m['nproc']} cores ({m['cpu_model']}), Python {m['python']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"


def save(out: dict[str, Any]) -> Path:
    """benchmarks/results/latest.json (and a timestamped copy), plus latest.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=2, default=str)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"run-{stamp}.json").write_text(text)
    latest = RESULTS / "latest.json"
    latest.write_text(text)
    (RESULTS / "latest.md").write_text(table(out) + "\n")
    return latest
