"""The split-brain fault harness: does an acknowledged revocation hold through Sentinel failovers?

A Sentinel group on loopback (a primary and two replicas with AOF, three sentinels), two
``tokenward serve`` processes on its ``redis+sentinel://`` URL with ``TOKENWARD_WAIT_REPLICAS=1``
(one strict, one cached), simulated users logging in, refreshing, checking their tokens on both
processes and ending their sessions in every way the API offers, while faults hit the primary
(``CLIENT PAUSE`` and ``SIGSTOP`` longer than ``down-after-milliseconds``, ``SIGKILL`` and a restart)
and a service process (``SIGKILL`` and a restart).

The checker records every acknowledged (2xx) revocation and, from one second after it until the
end, probes the revoked sessions' tokens on both processes: access tokens by forward-auth and
introspection, refresh tokens by refreshing. The invariants it counts:

* ``accepted``: a probe of a revoked session's token answered as valid (forward-auth 200,
  introspection ``active: true``, a refresh 200), sent 1 s or more after the acknowledgement;
* ``undone``: of those, refreshes (an acknowledged logout was undone);
* ``unexpected``: 5xx answers other than 503 (a 503 is the documented answer to a Redis fault).

It also measures every 503 window per fault and counts users signed out without a revocation
(a refresh refused for a session nobody revoked: rotations the store lost). Both the suite's
bounded run (``tests/test_split_brain.py``) and the soak script (``benchmarks/split_brain.py``)
use :class:`SplitBrainRun`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import random
import signal
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson

from service.keys import KeyRing, generate, make_key
from tests.conftest import CLIENT_SECRETS, basic
from tests.support import prom
from tests.support.processes import ROOT, ServiceProcess, write_config
from tests.support.redis_servers import RedisServer, ReplicatedCluster, SentinelGroup

# Probes sent this long after an acknowledgement must be refused (the cached process applies
# a revocation made on the other one from the event feed, which takes milliseconds).
GRACE: Final = 1.0
# 503 answers closer together than this belong to one window.
WINDOW_GAP: Final = 1.0
REVOCATION_ROUTES: Final = frozenset({"revoke", "logout_all", "admin_sid", "admin_sub"})


@dataclasses.dataclass(frozen=True)
class RedisConfig:
    """The data nodes' replication safety settings (``0`` turns ``min-replicas-to-write`` off)."""

    min_replicas_to_write: int = 1
    min_replicas_max_lag: int = 2

    def args(self) -> tuple[str, ...]:
        """redis-server arguments for every data node."""
        return (
            "--appendfsync",
            "everysec",
            "--min-replicas-to-write",
            str(self.min_replicas_to_write),
            "--min-replicas-max-lag",
            str(self.min_replicas_max_lag),
        )

    @classmethod
    def for_timeout(cls, redis_timeout: float) -> RedisConfig:
        """What docs/consistency.md recommends: a lag bound of twice the service's Redis timeout
        in whole seconds, at least 2 (lag is counted from the replicas' once-a-second ACK)."""
        return cls(1, max(2, math.ceil(2 * redis_timeout)))


@dataclasses.dataclass
class Session:
    """What one device knows of one session: every token it was handed."""

    sid: str
    sub: str
    access: list[str]
    refresh: list[str]
    revoked_at: float | None = None
    revoked_by: str = ""
    undone: bool = False


@dataclasses.dataclass(frozen=True)
class Answer:
    """One HTTP call as the harness saw it (status 0: no answer, the connection failed)."""

    sent: float
    done: float
    process: str
    route: str
    status: int


@dataclasses.dataclass(frozen=True)
class Violation:
    """A revoked session's token accepted after the grace second."""

    sid: str
    revoked_by: str
    how: str
    process: str
    after: float
    acked_at: float


@dataclasses.dataclass(frozen=True)
class Window:
    """A run of 503 answers on one process and route class, relative to its fault's start."""

    process: str
    routes: str
    start: float
    end: float
    count: int


@dataclasses.dataclass
class FaultReport:
    """One fault: when, what it did, and what clients saw until the next one."""

    name: str
    started: float
    settled_after: float = 0.0
    failover: bool = False
    # Replication stream the old primary took as primary beyond the promoted replica's
    # promotion point: writes it acknowledged and then lost when it rejoined.
    lost_bytes: int = 0
    windows: list[Window] = dataclasses.field(default_factory=list)
    revocations_back_after: float | None = None


@dataclasses.dataclass
class Report:
    """The invariant counts and the measurements of one run."""

    violations: list[Violation]
    undone: int
    unexpected: Counter[tuple[str, int]]
    statuses: Counter[tuple[str, int]]
    acknowledged: Counter[str]
    signed_out: int
    # Refreshes with a token ahead of the store accepted once (tokenward_refresh_total
    # {outcome="recovered"}, summed over both processes; a killed process's count restarts).
    recovered: int
    lost_connections: int
    faults: list[FaultReport]
    elapsed: float

    @property
    def accepted(self) -> int:
        return len(self.violations)

    @property
    def sessions_hit(self) -> int:
        return len({v.sid for v in self.violations})

    def lines(self) -> list[str]:
        """The human summary: invariants first, then the 503 windows per fault."""
        out = [
            f"run of {self.elapsed:.0f}s, {sum(self.statuses.values())} requests; acknowledged revocations: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.acknowledged.items())),
            f"INVARIANTS accepted-after-ack {self.accepted} (in {self.sessions_hit} sessions), "
            f"logouts-undone {self.undone}, unexpected-5xx {sum(self.unexpected.values())} {dict(self.unexpected)}",
            f"users signed out without a revocation (refresh refused): {self.signed_out}; "
            f"lost rotations recovered: {self.recovered}; "
            f"calls without an answer (service killed): {self.lost_connections}",
        ]
        by_kind: dict[str, set[str]] = defaultdict(set)
        for v in self.violations:
            by_kind[v.revoked_by].add(v.sid)
        if by_kind:
            out.append(
                "  sessions hit, by how they were revoked: " + ", ".join(f"{k} {len(v)}" for k, v in by_kind.items())
            )
        first_hits = {v.sid: v for v in reversed(self.violations)}
        for v in sorted(first_hits.values(), key=lambda v: v.acked_at)[:20]:
            fault = next((f for f in reversed(self.faults) if f.started <= v.acked_at), None)
            since = f"{v.acked_at - fault.started:.1f}s after {fault.name}" if fault else "before any fault"
            out.append(f"  session {v.sid[:10]} ({v.revoked_by}) acknowledged {since}, then {v.how} on {v.process}")
        for fault in self.faults:
            back = "n/a" if fault.revocations_back_after is None else f"{fault.revocations_back_after:.1f}s"
            out.append(
                f"fault {fault.name} at +{fault.started:.0f}s ({'failover' if fault.failover else 'no failover'}): "
                f"settled after {fault.settled_after:.1f}s, {fault.lost_bytes} bytes of writes lost, "
                f"revocations 2xx again after {back}"
            )
            for w in fault.windows:
                out.append(
                    f"  503 window {w.process}/{w.routes}: +{w.start:.1f}s..+{w.end:.1f}s "
                    f"({w.end - w.start:.1f}s, {w.count} answers)"
                )
        return out


def fresh_keyring() -> KeyRing:
    """A fresh signing key (the soak script has no pytest fixture)."""
    key = make_key("split-1", generate("RS256"))
    return KeyRing({key.kid: key}, key.kid)


class SplitBrainRun:
    """One run: topology, services, load, faults and checker. ``await run()`` → :class:`Report`."""

    def __init__(
        self,
        *,
        faults: list[str],
        settle: float = 10.0,
        users: int = 16,
        think: float = 0.3,
        redis: RedisConfig | None = None,
        redis_timeout: float = 1.0,
        service_root: Path = ROOT,
        keyring: KeyRing | None = None,
        seed: int = 16,
        log: Callable[[str], None] = print,
        topology: str = "sentinel",
        wait_replicas: int = 1,
    ) -> None:
        self.fault_names = faults
        self.settle = settle
        self.users = users
        self.think = think
        self.redis_config = redis if redis is not None else RedisConfig.for_timeout(redis_timeout)
        self.redis_timeout = redis_timeout
        self.wait_replicas = wait_replicas
        self.service_root = service_root
        self.keyring = keyring or fresh_keyring()
        self.rng = random.Random(seed)
        self.log = log
        # On a cluster the faults hit the primary that serves slot 0 (one slot range of three),
        # each primary with one replica; users spread over 16 partitions.
        self.group: SentinelGroup | ReplicatedCluster = (
            SentinelGroup(self.redis_config.args())
            if topology == "sentinel"
            else ReplicatedCluster(replicas=1, data_args=self.redis_config.args())
        )
        self.services: dict[str, ServiceProcess] = {}
        self.sessions: dict[str, Session] = {}
        self.answers: list[Answer] = []
        self.violations: list[Violation] = []
        self.acknowledged: Counter[str] = Counter()
        self.signed_out = 0
        self.faults: list[FaultReport] = []
        self.stopping = False
        self.t0 = 0.0
        self.http: aiohttp.ClientSession | None = None
        self.watched = False
        self.recovered = 0

    # -- set-up -------------------------------------------------------------------------------

    def start_topology(self) -> None:
        """Redis, sentinels and both service processes (blocking: run it in a thread)."""
        self.group.start()
        conf = Path(tempfile.mkdtemp(prefix="tw-split-"))
        env = {
            **write_config(conf, self.keyring, CLIENT_SECRETS),
            "TOKENWARD_REDIS_URL": self.group.url,
            "TOKENWARD_WAIT_REPLICAS": str(self.wait_replicas),
            "TOKENWARD_REDIS_TIMEOUT": str(self.redis_timeout),
            "TOKENWARD_PARTITIONS": "16" if isinstance(self.group, ReplicatedCluster) else "1",
        }
        for mode in ("strict", "cached"):
            self.services[mode] = ServiceProcess({**env, "TOKENWARD_DENY_MODE": mode}, root=self.service_root)
            self.services[mode].start()

    def close(self) -> None:
        for service in self.services.values():
            service.stop()
        for server in self.group.servers:
            if server.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.proc.pid, signal.SIGCONT)
        self.group.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def call(self, process: str, route: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """One request, recorded; status 0 when the process did not answer."""
        assert self.http is not None
        sent = self.now()
        body: Any = None
        try:
            async with self.http.request(method, self.services[process].url + path, **kwargs) as resp:
                status = resp.status
                raw = await resp.read()
                if raw and resp.content_type == "application/json":
                    body = orjson.loads(raw)
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.answers.append(Answer(sent, self.now(), process, route, status))
        return status, body

    async def retried(
        self, route: str, method: str, path: str, *, until: float = 30.0, **kwargs: Any
    ) -> tuple[int, Any, str]:
        """As a client does: on 503 or no answer, try again (either process) until a final answer."""
        deadline = self.now() + until
        while True:
            process = self.rng.choice(list(self.services))
            status, body = await self.call(process, route, method, path, **kwargs)
            if status not in (0, 503) or self.now() > deadline:
                return status, body, process
            await asyncio.sleep(0.2)

    # -- the simulated users ------------------------------------------------------------------

    async def login(self, sub: str) -> Session | None:
        status, body, _ = await self.retried("login", "POST", "/v1/sessions", json={"sub": sub}, headers=basic("login"))
        if status != 201:
            return None
        session = Session(body["session_id"], sub, [body["access_token"]], [body["refresh_token"]])
        self.sessions[session.sid] = session
        return session

    async def refresh(self, session: Session) -> bool:
        """Rotate; a refusal of a session nobody revoked signs the user out."""
        data = {"grant_type": "refresh_token", "refresh_token": session.refresh[-1]}
        status, body, _ = await self.retried("refresh", "POST", "/oauth/token", data=data)
        if status == 200:
            session.access.append(body["access_token"])
            session.refresh.append(body["refresh_token"])
            return True
        if status == 400:
            self.signed_out += 1
        return False

    async def check(self, session: Session) -> None:
        bearer = {"Authorization": f"Bearer {session.access[-1]}"}
        for process in self.services:
            await self.call(process, "authz", "GET", "/v1/authz", headers=bearer)
            await self.call(
                process, "introspect", "POST", "/oauth/introspect", data={"token": session.access[-1]},
                headers=basic("gateway"),
            )  # fmt: skip

    def acknowledge(self, sessions: list[Session], how: str) -> None:
        at = self.now()
        self.acknowledged[how] += 1
        for s in sessions:
            if s.revoked_at is None:
                s.revoked_at, s.revoked_by = at, how

    async def end(self, session: Session, known: list[Session]) -> None:
        """End ``session`` one of the ways the API offers (``known``: all of the user's sessions)."""
        how = self.rng.choice(["revoke", "revoke", "logout_all", "admin_sid", "admin_sub"])
        if how == "logout_all":
            bearer = {"Authorization": f"Bearer {session.access[-1]}"}
            status, _, _ = await self.retried(how, "DELETE", "/v1/me/sessions", headers=bearer)
            if status == 200:
                self.acknowledge(known, how)
                return
            how = "revoke"  # the access token was refused: log out with the refresh token instead
        if how == "revoke":
            status, _, _ = await self.retried(how, "POST", "/oauth/revoke", data={"token": session.refresh[-1]})
            if 200 <= status < 300:
                self.acknowledge([session], how)
        elif how == "admin_sid":
            body = {"sid": session.sid, "reason": "split-brain test"}
            status, _, _ = await self.retried(how, "POST", "/v1/revocations", json=body, headers=basic("admin"))
            if 200 <= status < 300:
                self.acknowledge([session], how)
        else:
            body = {"sub": session.sub, "reason": "split-brain test"}
            status, _, _ = await self.retried(how, "POST", "/v1/revocations", json=body, headers=basic("admin"))
            if 200 <= status < 300:
                self.acknowledge(known, how)

    async def user(self, n: int) -> None:
        """One user with up to two devices; every session it starts it also ends (or loses)."""
        generation = 0
        while not self.stopping:
            sub = f"sb{n}-{generation}"
            mine: list[Session] = []
            live: list[Session] = []
            for _ in range(self.rng.randint(3, 10)):
                if self.stopping:
                    break
                if len(live) < 2 and (not live or self.rng.random() < 0.3):
                    session = await self.login(sub)
                    if session is not None:
                        mine.append(session)
                        live.append(session)
                    continue
                session = self.rng.choice(live)
                if await self.refresh(session):
                    await self.check(session)
                else:
                    live.remove(session)
                await asyncio.sleep(self.think * self.rng.random() * 2)
            if live:
                await self.end(self.rng.choice(live), mine)
            for session in live:
                if session.revoked_at is None:
                    await self.end(session, mine)
            # A user whose sub was revoked starts over under a new sub, so a later login never
            # races an earlier revocation of the same sub.
            generation += 1

    # -- the checker --------------------------------------------------------------------------

    def violation(self, s: Session, how: str, process: str, sent: float) -> None:
        assert s.revoked_at is not None
        self.violations.append(Violation(s.sid, s.revoked_by, how, process, sent - s.revoked_at, s.revoked_at))

    async def probe(self, s: Session, *, everything: bool) -> None:
        """Probe a revoked session's tokens on both processes: the newest access token (every one
        when ``everything``), and its refresh tokens (the newest two, or every one)."""
        assert s.revoked_at is not None
        access = s.access if everything else s.access[-1:]
        for token in access:
            for process in self.services:
                sent = self.now()
                status, _ = await self.call(
                    process, "probe", "GET", "/v1/authz", headers={"Authorization": f"Bearer {token}"}
                )
                if status == 200:
                    self.violation(s, "forward-auth 200", process, sent)
                sent = self.now()
                status, body = await self.call(
                    process, "probe", "POST", "/oauth/introspect", data={"token": token}, headers=basic("gateway")
                )
                if status == 200 and body.get("active"):
                    self.violation(s, "introspection active", process, sent)
        for token in list(s.refresh if everything else s.refresh[-2:]):
            process = self.rng.choice(list(self.services))
            sent = self.now()
            data = {"grant_type": "refresh_token", "refresh_token": token}
            status, body = await self.call(process, "probe", "POST", "/oauth/token", data=data)
            if status == 200:
                self.violation(s, "refresh 200 (logout undone)", process, sent)
                s.undone = True
                s.access.append(body["access_token"])
                s.refresh.append(body["refresh_token"])

    async def checker(self) -> None:
        """Probe revoked sessions round-robin, each no earlier than ``GRACE`` after its acknowledgement."""
        while not self.stopping:
            due = [s for s in self.sessions.values() if s.revoked_at is not None and self.now() - s.revoked_at >= GRACE]
            if not due:
                await asyncio.sleep(0.2)
                continue
            # Newest revocations first: a leak shows right after a fault; then a sample of the rest.
            due.sort(key=lambda s: s.revoked_at or 0.0, reverse=True)
            batch = due[:30] + self.rng.sample(due[30:], min(20, len(due[30:])))
            for s in batch:
                if self.stopping:
                    return
                await self.probe(s, everything=False)
            await asyncio.sleep(0.5)

    # -- faults -------------------------------------------------------------------------------

    def fault(self, name: str) -> None:
        """Inject one fault and undo it (blocking: run it in a thread)."""
        if name == "pause":
            with self.group.master().client() as c:
                c.execute_command("CLIENT", "PAUSE", "3000", "ALL")
            time.sleep(3.2)
        elif name == "sigstop":
            master = self.group.master()
            assert master.proc is not None
            master.proc.send_signal(signal.SIGSTOP)
            time.sleep(3.0)
            master.proc.send_signal(signal.SIGCONT)
        elif name == "kill-primary":
            master = self.group.master()
            master.kill()
            time.sleep(3.0)
            master.restart()
        elif name == "kill-service":
            service = self.services[self.rng.choice(list(self.services))]
            service.stop()
            time.sleep(1.0)
            service.start()
        else:
            raise ValueError(f"unknown fault {name!r}; known: pause, sigstop, kill-primary, kill-service")

    async def inject(self, name: str) -> None:
        report = FaultReport(name, self.now())
        self.faults.append(report)
        self.log(f"+{report.started:.0f}s fault {name}")
        old = self.group.master()
        watching = asyncio.create_task(asyncio.to_thread(self.watch_offset, old))
        await asyncio.to_thread(self.fault, name)
        report.settled_after = await asyncio.to_thread(self.group.wait_settled) + self.now() - report.started
        self.watched = False
        last_offset = await watching
        new = self.group.master()
        report.failover = new.port != old.port
        if report.failover:
            with new.client() as c:
                promoted_at = int(c.info("replication").get("second_repl_offset", -1))
            report.lost_bytes = max(0, last_offset - promoted_at) if promoted_at >= 0 else 0

    def watch_offset(self, server: RedisServer) -> int:
        """The last replication offset ``server`` reported while it still called itself primary."""
        self.watched = True
        last = 0
        while self.watched:
            with contextlib.suppress(Exception), server.client() as c:
                info = c.info("replication")
                if info.get("role") == "master":
                    last = int(info["master_repl_offset"])
            time.sleep(0.05)
        return last

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> Report:
        """Warm up, inject every fault with ``settle`` seconds after each, stop the load, then
        probe every token of every revoked session once more on both processes."""
        await asyncio.to_thread(self.start_topology)
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=3 * self.redis_timeout + 5)
        self.t0 = time.monotonic()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            self.http = http
            tasks = [asyncio.create_task(self.user(n)) for n in range(self.users)]
            tasks.append(asyncio.create_task(self.checker()))
            try:
                await asyncio.sleep(self.settle)
                for name in self.fault_names:
                    await self.inject(name)
                    await asyncio.sleep(self.settle)
                self.stopping = True
                await asyncio.wait_for(asyncio.gather(*tasks), 120)
                self.log(f"+{self.now():.0f}s load stopped; final sweep")
                await self.sweep()
                self.recovered = await self.recovered_rotations()
            finally:
                for task in tasks:
                    task.cancel()
        return self.report()

    async def recovered_rotations(self) -> int:
        """tokenward_refresh_total{outcome="recovered"} over both processes."""
        total = 0
        for process in self.services:
            assert self.http is not None
            async with self.http.get(self.services[process].url + "/metrics", headers=basic("admin")) as resp:
                assert resp.status == 200, await resp.text()
                found = prom.samples(await resp.text())
            total += int(found.get(("tokenward_refresh_total", frozenset({("outcome", "recovered")})), 0))
        return total

    async def sweep(self) -> None:
        """Every token of every revoked session, from at least ``GRACE`` after its acknowledgement."""
        await asyncio.sleep(GRACE)
        revoked = [s for s in self.sessions.values() if s.revoked_at is not None]
        limit = asyncio.Semaphore(8)

        async def one(s: Session) -> None:
            async with limit:
                await self.probe(s, everything=True)

        await asyncio.gather(*(one(s) for s in revoked))

    def report(self) -> Report:
        statuses: Counter[tuple[str, int]] = Counter((a.route, a.status) for a in self.answers)
        unexpected = Counter({k: v for k, v in statuses.items() if k[1] >= 500 and k[1] != 503})
        for i, fault in enumerate(self.faults):
            end = self.faults[i + 1].started if i + 1 < len(self.faults) else math.inf
            in_fault = [a for a in self.answers if fault.started <= a.sent < end]
            fault.windows = windows(in_fault, fault.started)
            # The first revocation acknowledged after the window of 503s the fault opened (both
            # processes together); later blips show in the windows.
            first = windows([replace(a, process="any") for a in in_fault if a.route in REVOCATION_ROUTES], 0.0)
            if first:
                end = first[0].end
                back = [
                    a.done for a in in_fault if a.route in REVOCATION_ROUTES and 200 <= a.status < 300 and a.sent > end
                ]
                fault.revocations_back_after = (min(back) if back else math.inf) - fault.started
        return Report(
            violations=self.violations,
            undone=sum(s.undone for s in self.sessions.values()),
            unexpected=unexpected,
            statuses=statuses,
            acknowledged=self.acknowledged,
            signed_out=self.signed_out,
            recovered=self.recovered,
            lost_connections=sum(v for k, v in statuses.items() if k[1] == 0),
            faults=self.faults,
            elapsed=self.now(),
        )


def windows(answers: list[Answer], origin: float) -> list[Window]:
    """Runs of 503s per process and route class (revocations, the rest), gaps under ``WINDOW_GAP``."""
    by_key: dict[tuple[str, str], list[Answer]] = defaultdict(list)
    for a in answers:
        if a.status == 503:
            kind = "revocations" if a.route in REVOCATION_ROUTES else "other"
            by_key[(a.process, kind)].append(a)
    out: list[Window] = []
    for (process, kind), found in sorted(by_key.items()):
        found.sort(key=lambda a: a.sent)
        start, end, count = found[0].sent, found[0].done, 0
        for a in found:
            if a.sent - end > WINDOW_GAP:
                out.append(Window(process, kind, start - origin, end - origin, count))
                start, count = a.sent, 0
            end, count = max(end, a.done), count + 1
        out.append(Window(process, kind, start - origin, end - origin, count))
    return out


async def run_once(**kwargs: Any) -> Report:
    """Build, run and tear down one :class:`SplitBrainRun`."""
    run = SplitBrainRun(**kwargs)
    try:
        return await run.run()
    finally:
        await asyncio.to_thread(run.close)
