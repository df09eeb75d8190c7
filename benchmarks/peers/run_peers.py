#!/usr/bin/env python3
"""Benchmark the "peers": what a Python team would use instead of Tokenward.

  * simplejwt: Django + DRF + djangorestframework-simplejwt, ROTATE_REFRESH_TOKENS
    + BLACKLIST_AFTER_ROTATION + token_blacklist app, PostgreSQL, RS256.
  * flask:     Flask + flask-jwt-extended with the documented Redis blocklist, RS256.

Stdlib only; run with any python3 (>= 3.8).  It

  1. creates benchmarks/peers/.venv from requirements.txt when missing/stale,
  2. generates an RSA key pair, starts a private redis-server (--save '') on a
     free loopback port, creates a fresh PostgreSQL database and migrates it,
  3. starts each app under gunicorn (sync workers, --workers N, 127.0.0.1),
  4. smoke-tests each app (rotation, replay rejection, revocation),
  5. drives each figure with wrk (fixed threads/connections/duration,
     wrk/peer.lua; every simplejwt/flask-rotate refresh request uses a fresh,
     pre-generated single-use refresh token),
  6. prints a table and writes JSON; kills everything it started and drops the
     database (try/finally).

Figures (--only takes a comma-separated subset):
  simplejwt_refresh     POST /api/token/refresh/  rotation + blacklist (single-use tokens)
  simplejwt_verify      GET  /api/protected/      JWTAuthentication + IsAuthenticated
  flask_refresh         POST /refresh             refresh-protected, new access token
                                                  (no rotation: library default)
  flask_refresh_rotate  POST /refresh/rotate      single-use rotation via Redis SET NX
  flask_protected       GET  /protected           access-protected, Redis blocklist check

Library use:
    sys.path.insert(0, "benchmarks/peers"); import run_peers
    results = run_peers.run(workers=1, duration=10, connections=16)
"""
import argparse
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
REQUIREMENTS = HERE / "requirements.txt"
LUA = HERE / "wrk" / "peer.lua"
DJANGO_DIR = HERE / "simplejwt_app"
FLASK_DIR = HERE / "flask_app"

BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password"

BENCHES = {
    "simplejwt_refresh": {
        "app": "simplejwt", "method": "POST", "path": "/api/token/refresh/",
        "mode": "file", "where": "body:refresh", "token": "simplejwt_refresh_file",
        "what": "simplejwt refresh rotation (ROTATE+BLACKLIST, single-use tokens)",
    },
    "simplejwt_verify": {
        "app": "simplejwt", "method": "GET", "path": "/api/protected/",
        "mode": "static", "where": "header", "token": "simplejwt_access",
        "what": "simplejwt protected view (JWTAuthentication + IsAuthenticated)",
    },
    "flask_refresh": {
        "app": "flask", "method": "POST", "path": "/refresh",
        "mode": "static", "where": "header", "token": "flask_refresh",
        "what": "flask-jwt-extended /refresh (new access token, NO rotation; blocklist GET)",
    },
    "flask_refresh_rotate": {
        "app": "flask", "method": "POST", "path": "/refresh/rotate",
        "mode": "file", "where": "header", "token": "flask_refresh_file",
        "what": "flask-jwt-extended single-use rotation (Redis SET NX EX; beyond docs)",
    },
    "flask_protected": {
        "app": "flask", "method": "GET", "path": "/protected",
        "mode": "static", "where": "header", "token": "flask_access",
        "what": "flask-jwt-extended protected view (Redis blocklist GET)",
    },
}
DEFAULT_ORDER = list(BENCHES)

# Upper bound guesses of per-core request rates, only used to size the initial
# batch of single-use refresh tokens; the runner tops the batch up after the
# warm-up run if the measured rate needs more.
RATE_GUESS = {"simplejwt": 250, "flask": 1200}


def log(msg):
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# helpers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_python():
    return VENV / "bin" / "python"


def pick_base_python(explicit=None):
    if explicit:
        return explicit
    if sys.version_info >= (3, 10):
        return sys.executable
    for name in ("python3.13", "python3.12", "python3.11", "python3.10"):
        p = shutil.which(name)
        if p:
            return p
    raise BenchError("need Python >= 3.10 to build the peer venv (Django 5.2); pass --python")


def ensure_venv(python=None):
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if venv_python().exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return
    base = pick_base_python(python)
    if not venv_python().exists():
        log(f"creating venv {VENV} with {base}")
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    log("installing requirements.txt into the peer venv")
    pip = [str(venv_python()), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["install", "--upgrade", "pip"], check=True)
    subprocess.run(pip + ["install", "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(digest + "\n")


def vpy(code, env=None, timeout=600):
    """Run a snippet with the venv interpreter; return stdout."""
    r = subprocess.run([str(venv_python()), "-c", code], env=env, capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"venv python failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def http(method, url, body=None, token=None, timeout=10):
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def expect(cond, msg):
    if not cond:
        raise BenchError(f"smoke test failed: {msg}")


class Procs:
    """Every process we start, so that all of them can be killed at the end."""

    def __init__(self):
        self.items = []  # (name, Popen, logfile handle)

    def start(self, name, cmd, env=None, cwd=None, log_path=None):
        fh = open(log_path, "ab") if log_path else subprocess.DEVNULL
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.items.append((name, p, fh))
        return p

    def stop(self, proc, grace=10.0):
        for i, (name, p, fh) in enumerate(self.items):
            if p is proc:
                self._kill(p)
                if fh is not subprocess.DEVNULL:
                    fh.close()
                del self.items[i]
                return

    @staticmethod
    def _kill(p, grace=10.0):
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)  # own session => pgid == pid
        except ProcessLookupError:
            return
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)

    def stop_all(self):
        while self.items:
            self.stop(self.items[-1][1])


def wait_http(url, proc, log_path, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited early (rc={proc.returncode}); log:\n{tail(log_path)}")
        try:
            http("GET", url, timeout=2)
            return
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    raise BenchError(f"server at {url} not ready after {timeout}s; log:\n{tail(log_path)}")


def tail(path, n=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def count_lines(path):
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


# --------------------------------------------------------------------------
# backing services


PG_ADMIN = """
import os, sys, psycopg
from psycopg import sql
name, action = sys.argv[1], sys.argv[2]
conn = psycopg.connect(host=os.environ.get("PGHOST", "127.0.0.1"),
                       port=os.environ.get("PGPORT", "5432"),
                       user=os.environ.get("PGUSER", "postgres"),
                       password=os.environ.get("PGPASSWORD") or None,
                       dbname=os.environ.get("PEER_PG_ADMIN_DB", "postgres"),
                       autocommit=True)
conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
if action == "create":
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
conn.close()
"""


def pg_admin(db_name, action, env):
    r = subprocess.run([str(venv_python()), "-c", PG_ADMIN, db_name, action], env=env,
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise BenchError(f"PostgreSQL {action} {db_name} failed:\n{r.stderr}")


def start_redis(procs, tmp):
    exe = shutil.which("redis-server")
    if not exe:
        raise BenchError("redis-server not on PATH (apt-get install -y redis-server)")
    port = free_port()
    log_path = tmp / "redis.log"
    p = procs.start("redis", [exe, "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(tmp),
                              "--daemonize", "no", "--protected-mode", "yes"],
                    log_path=log_path)
    deadline = time.time() + 20
    while time.time() < deadline:
        if p.poll() is not None:
            raise BenchError(f"redis-server exited; log:\n{tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return p, port
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError("redis-server did not answer PING")


def start_gunicorn(procs, name, app_module, chdir, workers, env, tmp):
    port = free_port()
    log_path = tmp / f"gunicorn-{name}.log"
    cmd = [str(VENV / "bin" / "gunicorn"), "--workers", str(workers), "--worker-class", "sync",
           "--bind", f"127.0.0.1:{port}", "--chdir", str(chdir), "--log-level", "warning",
           "--timeout", "60", app_module]
    p = procs.start(f"gunicorn-{name}", cmd, env=env, cwd=str(chdir), log_path=log_path)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/", p, log_path)
    return p, base, log_path


# --------------------------------------------------------------------------
# wrk


def run_wrk(base, bench, token_value, offset, args, duration, label):
    spec = BENCHES[bench]
    url = base + spec["path"]
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s",
           f"--timeout", f"{args.wrk_timeout}s", "--latency", "-s", str(LUA), url, "--",
           spec["mode"], spec["where"], token_value, str(offset), spec["method"],
           str(args.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((l for l in r.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if r.returncode != 0 or line is None:
        raise BenchError(f"wrk failed for {bench} ({label}) rc={r.returncode}:\n{r.stdout}\n{r.stderr}")
    data = json.loads(line[len("WRKJSON "):])
    data["wrk_text"] = "\n".join(l for l in r.stdout.splitlines() if not l.startswith("WRKJSON "))
    return data


def summarize(bench, raw, args, extra=None):
    lat = raw["latency_us"]
    errs = raw["errors"]
    secs = raw["duration_us"] / 1e6 if raw["duration_us"] else float("nan")
    socket_errors = errs["connect"] + errs["read"] + errs["write"] + errs["timeout"]
    errors_total = raw["non2xx"] + socket_errors
    res = {
        "what": BENCHES[bench]["what"],
        "method": BENCHES[bench]["method"],
        "path": BENCHES[bench]["path"],
        "requests_per_sec": round(raw["requests"] / secs, 1) if secs else 0.0,
        "requests": raw["requests"],
        "duration_s": round(secs, 3),
        "latency_ms": {k: round(v / 1000.0, 3) for k, v in lat.items()},
        "p50_ms": round(lat["p50"] / 1000.0, 3),
        "p99_ms": round(lat["p99"] / 1000.0, 3),
        "non_2xx": raw["non2xx"],
        "socket_errors": {k: errs[k] for k in ("connect", "read", "write", "timeout")},
        "tokens_exhausted": raw["exhausted"],
        "errors_total": errors_total,
        "first_error": raw["first_err"] or None,
        "ok": errors_total == 0 and raw["exhausted"] == 0 and raw["requests"] > 0,
        "loadavg_1m_before": raw.get("loadavg_1m_before"),
        "workers": args.workers,
        "connections": args.connections,
        "threads": args.threads,
    }
    if extra:
        res.update(extra)
    if not res["ok"]:
        banner = "!" * 78
        log(f"\n{banner}\n!!! BENCHMARK {bench} HAD ERRORS: non-2xx={raw['non2xx']} "
            f"socket={res['socket_errors']} exhausted={raw['exhausted']}\n!!! first error: "
            f"{raw['first_err']}\n!!! ITS NUMBERS ARE NOT VALID\n{banner}")
    return res


def run_figure(bench, base, tokens, args, topup=None):
    """Warm up, then measure one figure.  `tokens` maps token names to values
    (static) or to file paths (single-use)."""
    spec = BENCHES[bench]
    value = tokens[spec["token"]]
    offset_key = spec["token"] + ":offset"
    offset = tokens.get(offset_key, 0)
    if args.warmup > 0:
        w = run_wrk(base, bench, value, offset, args, args.warmup, "warmup")
        if spec["mode"] == "file":
            offset += w["used_max_per_thread"] * args.threads
        if w["non2xx"] or w["exhausted"]:
            log(f"warm-up of {bench} saw errors: {w['first_err']!r} (exhausted={w['exhausted']})")
        if spec["mode"] == "file" and topup is not None:
            rate = w["requests"] / (w["duration_us"] / 1e6) if w["duration_us"] else 0
            need = int(math.ceil(rate * args.duration * 1.5)) + 500
            have = count_lines(value) - offset
            if have < need:
                log(f"{bench}: topping up single-use tokens ({have} left, need ~{need})")
                topup(need - have)
    log(f"measuring {bench} for {args.duration}s")
    load_before = os.getloadavg()[0]
    raw = run_wrk(base, bench, value, offset, args, args.duration, "measure")
    if spec["mode"] == "file":
        tokens[offset_key] = offset + raw["used_max_per_thread"] * args.threads
    # 1-min load average before the run: a high value means something else was
    # competing for the cores (the numbers are then not comparable).
    raw["loadavg_1m_before"] = round(load_before, 2)
    return raw


# --------------------------------------------------------------------------
# peers


def django_env(base_env, db_name, keys):
    env = dict(base_env)
    env.update({
        "DJANGO_SETTINGS_MODULE": "peerproject.settings",
        "PEER_DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "PEER_DB_NAME": db_name,
        "PEER_JWT_ALGORITHM": keys["alg"],
        "PEER_JWT_PRIVATE_KEY_FILE": keys["private"],
        "PEER_JWT_PUBLIC_KEY_FILE": keys["public"],
        "PYTHONPATH": str(DJANGO_DIR),
    })
    return env


def manage(env, *argv, timeout=1800):
    r = subprocess.run([str(venv_python()), str(DJANGO_DIR / "manage.py"), *argv], env=env,
                       cwd=str(DJANGO_DIR), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"manage.py {' '.join(argv)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def smoke_simplejwt(base):
    st, pair = http("POST", base + "/api/token/", {"username": BENCH_USER, "password": BENCH_PASSWORD})
    expect(st == 200 and "access" in pair and "refresh" in pair, f"/api/token/ -> {st} {pair}")
    st, body = http("GET", base + "/api/protected/", token=pair["access"])
    expect(st == 200, f"/api/protected/ with access -> {st} {body}")
    st, body = http("GET", base + "/api/protected/")
    expect(st == 401, f"/api/protected/ without token -> {st}")
    st, body = http("POST", base + "/api/token/verify/", {"token": pair["access"]})
    expect(st == 200, f"/api/token/verify/ -> {st} {body}")
    st, rot = http("POST", base + "/api/token/refresh/", {"refresh": pair["refresh"]})
    expect(st == 200 and "refresh" in rot and rot["refresh"] != pair["refresh"],
           f"refresh rotation -> {st} {rot}")
    st, body = http("POST", base + "/api/token/refresh/", {"refresh": pair["refresh"]})
    expect(st == 401, f"replayed (blacklisted) refresh token must be 401, got {st} {body}")
    st, body = http("POST", base + "/api/token/verify/", {"token": pair["refresh"]})
    expect(st in (400, 401), f"verify of blacklisted refresh token must fail, got {st}")
    st, body = http("POST", base + "/api/token/refresh/", {"refresh": rot["refresh"]})
    expect(st == 200, f"rotated refresh token must work once -> {st} {body}")
    return "ok: obtain, protected, verify, rotate, replay->401, blacklisted verify->400"


def smoke_flask(base):
    st, pair = http("POST", base + "/login", {"username": BENCH_USER, "password": BENCH_PASSWORD})
    expect(st == 200 and "access_token" in pair, f"/login -> {st} {pair}")
    a, rf = pair["access_token"], pair["refresh_token"]
    st, body = http("GET", base + "/protected", token=a)
    expect(st == 200, f"/protected -> {st} {body}")
    st, body = http("GET", base + "/protected", token=rf)
    expect(st == 422 or st == 401, f"/protected with refresh token must fail, got {st}")
    st, body = http("POST", base + "/refresh", token=rf)
    expect(st == 200 and "access_token" in body, f"/refresh -> {st} {body}")
    st, body = http("POST", base + "/refresh", token=rf)
    expect(st == 200, f"/refresh again (no rotation: still valid) -> {st} {body}")
    st, rot = http("POST", base + "/refresh/rotate", token=rf)
    expect(st == 200 and rot.get("refresh_token"), f"/refresh/rotate -> {st} {rot}")
    st, body = http("POST", base + "/refresh/rotate", token=rf)
    expect(st == 401, f"replayed rotated refresh must be 401, got {st} {body}")
    st, body = http("POST", base + "/refresh", token=rf)
    expect(st == 401, f"rotated-away refresh must be 401 on /refresh, got {st} {body}")
    st, body = http("DELETE", base + "/logout", token=a)
    expect(st == 200, f"/logout -> {st} {body}")
    st, body = http("GET", base + "/protected", token=a)
    expect(st == 401, f"revoked access token must be 401, got {st} {body}")
    return "ok: login, protected, refresh x2 (no rotation), rotate, replay->401, logout->401"


def run_simplejwt(figs, procs, tmp, keys, args, results, meta):
    db_name = args.db_name
    env = django_env(os.environ, db_name, keys)
    created = False
    try:
        log(f"creating PostgreSQL database {db_name}")
        pg_admin(db_name, "create", env)
        created = True
        manage(env, "migrate", "--noinput", "-v", "0")
        tokfile = tmp / "simplejwt_refresh_tokens.txt"
        tokens = {"simplejwt_refresh_file": str(tokfile)}
        n = 0
        if "simplejwt_refresh" in figs:
            n = args.refresh_tokens or token_budget("simplejwt", args)
        log(f"simplejwt: creating user and {n} refresh tokens via RefreshToken.for_user()")
        t0 = time.time()
        out = manage(env, "peer_setup", "--refresh-tokens", str(n), "--out", str(tokfile),
                     "--username", BENCH_USER, "--password", BENCH_PASSWORD)
        log(f"simplejwt: token generation took {time.time() - t0:.1f}s: {out.strip()}")
        gen = json.loads(out.strip().splitlines()[-1])
        if gen["outstanding_after"] - gen["outstanding_before"] != n:
            raise BenchError(f"expected {n} new OutstandingToken rows, got {gen}")

        def topup(k):
            extra = tmp / "simplejwt_topup.txt"
            manage(env, "peer_setup", "--refresh-tokens", str(k), "--out", str(extra))
            with open(tokfile, "a") as dst, open(extra) as src:
                shutil.copyfileobj(src, dst)

        proc, base, glog = start_gunicorn(procs, "simplejwt", "peerproject.wsgi:application",
                                          DJANGO_DIR, args.workers, env, tmp)
        try:
            meta["smoke"]["simplejwt"] = smoke_simplejwt(base)
            stats0 = json.loads(manage(env, "peer_stats").strip())
            for fig in figs:
                if fig == "simplejwt_verify":
                    acc = tmp / "simplejwt_access.txt"
                    manage(env, "peer_setup", "--access-token-out", str(acc))
                    tokens["simplejwt_access"] = acc.read_text().strip()
                raw = run_figure(fig, base, tokens, args,
                                 topup=topup if fig == "simplejwt_refresh" else None)
                extra = {}
                if fig == "simplejwt_refresh":
                    stats1 = json.loads(manage(env, "peer_stats").strip())
                    extra["db_rows"] = {"before": stats0, "after": stats1}
                    extra["blacklisted_during_run_incl_warmup"] = (
                        stats1["blacklisted"] - stats0["blacklisted"])
                results[fig] = summarize(fig, raw, args, extra)
        finally:
            procs.stop(proc)
            if args.verbose:
                log(f"gunicorn simplejwt log:\n{tail(glog)}")
    finally:
        if created and not args.keep_db:
            log(f"dropping database {db_name}")
            try:
                pg_admin(db_name, "drop", env)
            except BenchError as e:
                log(f"WARNING: {e}")


def run_flask(figs, procs, tmp, keys, args, results, meta):
    redis_proc, redis_port = start_redis(procs, tmp)
    try:
        env = dict(os.environ)
        env.update({
            "PEER_JWT_ALGORITHM": keys["alg"],
            "PEER_JWT_PRIVATE_KEY_FILE": keys["private"],
            "PEER_JWT_PUBLIC_KEY_FILE": keys["public"],
            "PEER_FLASK_SECRET_KEY": secrets.token_urlsafe(50),
            "PEER_REDIS_HOST": "127.0.0.1",
            "PEER_REDIS_PORT": str(redis_port),
            "PEER_BENCH_USER": BENCH_USER,
            "PEER_BENCH_PASSWORD": BENCH_PASSWORD,
        })
        if args.flask_pem_string_keys:
            env["FLASK_PEER_PEM_STRING_KEYS"] = "1"
        tokfile = tmp / "flask_refresh_tokens.txt"
        access, refresh = tmp / "flask_access.txt", tmp / "flask_refresh.txt"
        n = 0
        if "flask_refresh_rotate" in figs:
            n = args.refresh_tokens or token_budget("flask", args)

        def gen(k, out):
            r = subprocess.run([str(venv_python()), str(FLASK_DIR / "app.py"), str(k), str(out),
                                str(access), str(refresh)], env=env, capture_output=True,
                               text=True, timeout=1800)
            if r.returncode != 0:
                raise BenchError(f"flask token generation failed:\n{r.stderr}")

        log(f"flask: generating {n} refresh tokens")
        gen(n, tokfile)
        tokens = {"flask_refresh_file": str(tokfile),
                  "flask_access": access.read_text().strip(),
                  "flask_refresh": refresh.read_text().strip()}

        def topup(k):
            extra = tmp / "flask_topup.txt"
            gen(k, extra)
            with open(tokfile, "a") as dst, open(extra) as src:
                shutil.copyfileobj(src, dst)

        proc, base, glog = start_gunicorn(procs, "flask", "app:app", FLASK_DIR, args.workers,
                                          env, tmp)
        try:
            meta["smoke"]["flask"] = smoke_flask(base)
            meta["flask_key_mode"] = ("PEM strings in config (re-parsed per signature)"
                                      if args.flask_pem_string_keys
                                      else "key objects loaded once at start-up")
            for fig in figs:
                raw = run_figure(fig, base, tokens, args,
                                 topup=topup if fig == "flask_refresh_rotate" else None)
                results[fig] = summarize(fig, raw, args)
        finally:
            procs.stop(proc)
            if args.verbose:
                log(f"gunicorn flask log:\n{tail(glog)}")
    finally:
        procs.stop(redis_proc)


def token_budget(app, args):
    cores = min(args.workers, os.cpu_count() or 1)
    rate = RATE_GUESS[app] * max(1, cores)
    return int(math.ceil(rate * (args.duration + args.warmup) * 1.3)) + 1000


def make_keys(tmp, alg):
    keys = {"alg": alg, "private": str(tmp / "jwt_private.pem"), "public": str(tmp / "jwt_public.pem")}
    if alg.startswith("RS"):
        vpy(
            "import sys\n"
            "from cryptography.hazmat.primitives.asymmetric import rsa\n"
            "from cryptography.hazmat.primitives import serialization as s\n"
            "k = rsa.generate_private_key(public_exponent=65537, key_size=2048)\n"
            "open(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n"
            "open(sys.argv[2], 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n"
            .replace("sys.argv[1]", repr(keys["private"])).replace("sys.argv[2]", repr(keys["public"])))
    return keys


def versions():
    out = vpy("import importlib.metadata as m, json\n"
              "print(json.dumps({p: m.version(p) for p in ['Django', 'djangorestframework', "
              "'djangorestframework-simplejwt', 'psycopg', 'Flask', 'Flask-JWT-Extended', 'redis', "
              "'gunicorn', 'PyJWT', 'cryptography']}))")
    v = json.loads(out)
    v["python"] = vpy("import sys; print(sys.version.split()[0])").strip()
    try:
        v["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    except OSError:
        pass
    try:
        v["redis-server"] = subprocess.run(["redis-server", "--version"], capture_output=True,
                                           text=True).stdout.split()[2]
    except (OSError, IndexError):
        pass
    return v


# --------------------------------------------------------------------------
# public entry point


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=1, help="gunicorn sync workers per app (default 1)")
    ap.add_argument("--duration", type=int, default=10, help="measured seconds per figure (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up seconds per figure (default 2; 0=off)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--wrk-timeout", type=int, default=5, help="wrk per-request timeout, s (default 5)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(DEFAULT_ORDER))
    ap.add_argument("--json", dest="json_path", default=None,
                    help="also write results here (benchmarks/peers/results.json is always written)")
    ap.add_argument("--algorithm", default="RS256", choices=["RS256", "HS256"])
    ap.add_argument("--refresh-tokens", type=int, default=0,
                    help="single-use refresh tokens to pre-generate (default: sized from duration)")
    ap.add_argument("--db-name", default="tw_peer_bench", help="PostgreSQL database to create+drop")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    ap.add_argument("--flask-pem-string-keys", action="store_true",
                    help="put PEM strings in flask-jwt-extended config (docs-literal; PyJWT then "
                         "re-parses the RSA private key for every signature)")
    ap.add_argument("--python", default=None, help="interpreter used to create the peer venv")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, tokens)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    return args


def run(**kwargs):
    """Programmatic entry: run(workers=1, duration=10, connections=16, only="a,b",
    json_path=None, ...) -> results dict (same as results.json)."""
    argv = []
    for k, v in kwargs.items():
        flag = "--" + k.replace("_", "-")
        if k == "json_path":
            flag = "--json"
        if isinstance(v, bool):
            if v:
                argv.append(flag)
        elif isinstance(v, (list, tuple)):
            argv += [flag, ",".join(v)]
        elif v is not None:
            argv += [flag, str(v)]
    return run_args(parse_args(argv))


def run_args(args):
    figs = [f.strip() for f in args.only.split(",") if f.strip()] or list(DEFAULT_ORDER)
    unknown = [f for f in figs if f not in BENCHES]
    if unknown:
        raise BenchError(f"unknown figure(s) {unknown}; choose from {DEFAULT_ORDER}")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.db_name):
        raise BenchError("--db-name must match [a-z_][a-z0-9_]*")
    if not shutil.which("wrk"):
        raise BenchError("wrk not found on PATH (Debian: apt-get install -y wrk)")
    ensure_venv(args.python)

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta = {
        "started": started, "workers": args.workers, "worker_class": "sync",
        "duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections,
        "wrk_threads": args.threads, "algorithm": args.algorithm, "host": "127.0.0.1",
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "smoke": {},
    }
    results = {}
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="tw-peers-"))
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not in main thread
        old_term = None
    try:
        meta["versions"] = versions()
        keys = make_keys(tmp, args.algorithm)
        sj = [f for f in figs if BENCHES[f]["app"] == "simplejwt"]
        fl = [f for f in figs if BENCHES[f]["app"] == "flask"]
        if sj:
            run_simplejwt(sj, procs, tmp, keys, args, results, meta)
        if fl:
            run_flask(fl, procs, tmp, keys, args, results, meta)
    finally:
        procs.stop_all()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if args.keep_tmp:
            log(f"kept temp dir {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    ordered = {f: results[f] for f in figs if f in results}
    out = {"meta": meta, "results": ordered, "ok": all(r["ok"] for r in ordered.values())}
    text = json.dumps(out, indent=2, sort_keys=False)
    (HERE / "results.json").write_text(text + "\n")
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")
    print_table(out)
    return out


def print_table(out):
    m = out["meta"]
    print(f"\nPeer benchmarks: gunicorn {m['worker_class']} x{m['workers']} worker(s), "
          f"wrk -t{m['wrk_threads']} -c{m['connections']} -d{m['duration_s']}s "
          f"(+{m['warmup_s']}s warm-up), {m['algorithm']}, {m['cpu_count']} cores")
    hdr = f"{'figure':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'errors':>8}  status"
    print(hdr)
    print("-" * len(hdr))
    for name, r in out["results"].items():
        status = "ok" if r["ok"] else "!!! ERRORS - INVALID"
        print(f"{name:<22}{r['requests_per_sec']:>10.1f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
              f"{r['requests']:>10}{r['errors_total']:>8}  {status}")
    if not out["ok"]:
        print("\n!!! AT LEAST ONE PEER BENCHMARK HAD ERRORS (non-2xx / socket errors / token "
              "exhaustion): see results.json", flush=True)


def main(argv=None):
    try:
        out = run_args(parse_args(argv))
    except BenchError as e:
        log(f"ERROR: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
