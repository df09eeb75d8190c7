"""The ``tokenward`` command: serve, check, keys, clients."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from . import keys as keymod
from . import logs
from .clients import hash_secret, new_secret
from .config import Settings
from .errors import ConfigError


def _settings() -> Settings:
    return Settings.from_env(os.environ)


def serve(settings: Settings) -> int:
    """Run the HTTP service until SIGTERM/SIGINT, then drain."""
    from .app import DEV_CLIENT, create_app
    from .http import protocol

    if not settings.embedded and check(settings, quiet=True, unreachable_ok=True) != 0:
        return 1
    app = create_app(settings)
    if settings.embedded:
        logging.getLogger("tokenward").warning(
            # Its secret is in the README, never in a log a deployment may ship somewhere.
            "embedded mode: development client %r has every scope (the README's Quick start names its password)",
            DEV_CLIENT[0],
        )
    protocol.serve(
        app,
        settings.host,
        settings.port,
        shutdown_timeout=settings.shutdown_timeout,
        # aiohttp has no request-head timeout; its keep-alive timer, armed from the connection's
        # start and after each answer, closes a connection whose next request head is not in
        # (tests/http/test_hostile.py pins this). Bodies have their own deadline (parsing._body).
        keepalive_timeout=settings.client_timeout,
        lingering_time=settings.client_timeout,  # how long an unread body is drained after an answer
    )
    return 0


def check(settings: Settings, *, quiet: bool = False, unreachable_ok: bool = False) -> int:
    """Connect to the store and verify it is fit for production; 0 when it is, 1 when not.

    ``unreachable_ok`` (``serve``): a Redis that does not answer yet is not a refusal; the
    service starts, answers 503, and runs the check once Redis answers.
    """
    from redis.exceptions import RedisError

    from .store import check_fitness, connect

    def say(level: int, text: str) -> None:
        # Under serve, a log line (JSON in production); as `tokenward check`, plain stderr for a person.
        if quiet:
            logging.getLogger("tokenward").log(level, text)
        else:
            print(f"tokenward: {text}", file=sys.stderr)

    async def run() -> int:
        try:
            store = await connect(settings, attempts=2)
        except (OSError, RedisError) as exc:
            say(logging.ERROR, f"cannot reach Redis ({type(exc).__name__}: {exc})")
            if unreachable_ok:
                say(logging.WARNING, "starting anyway; calls answer 503 until Redis answers")
                return 0
            return 1
        try:
            fitness = await check_fitness(store)
        finally:
            await store.aclose()
        for warning in fitness.warnings:
            say(logging.WARNING, f"warning: {warning}")
        for error in fitness.errors:
            say(logging.ERROR, f"refusing this Redis: {error}")
        if not fitness.errors and not quiet:
            print(f"ok: {store.kind} store reachable and fit")
        return 1 if fitness.errors else 0

    return asyncio.run(run())


def keys_generate(directory: Path, kid: str, alg: str) -> int:
    """Write a new private key as ``<dir>/<kid>.pem`` (mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kid}.pem"
    if path.exists():
        raise ConfigError(f"{path} exists already")
    key = keymod.generate(alg)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(keymod.to_pem(key))
    print(path)
    return 0


def keys_list(directory: Path, signing_kid: str | None) -> int:
    """Print every key in the directory, its algorithm, and which one signs."""
    ring = keymod.KeyRing.from_dir(directory, signing_kid)
    for kid, key in sorted(ring.keys.items()):
        mark = "  <- signs" if kid == ring.signer.kid else ""
        print(f"{kid}\t{key.alg}{mark}")
    return 0


def keys_retire(directory: Path, kid: str, signing_kid: str | None) -> int:
    """Delete a key that no longer signs, after its last token has expired."""
    ring = keymod.KeyRing.from_dir(directory, signing_kid)
    if kid not in ring.keys:
        raise ConfigError(f"no key {kid!r} in {directory}")
    if kid == ring.signer.kid:
        raise ConfigError(f"{kid!r} is the signing key; switch TOKENWARD_SIGNING_KID to another key first")
    (directory / f"{kid}.pem").unlink()
    print(f"retired {kid}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tokenward`` console script."""
    parser = argparse.ArgumentParser(prog="tokenward", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the service (settings from TOKENWARD_* variables)")
    sub.add_parser("check", help="check the configuration and the Redis it points at")
    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="keys_command", required=True)
    gen = keys.add_parser("generate", help="write a new private key <dir>/<kid>.pem")
    gen.add_argument("--dir", type=Path, required=True)
    gen.add_argument("--kid", required=True)
    gen.add_argument("--alg", default="RS256", choices=["RS256", "ES256", "EdDSA"])
    ls = keys.add_parser("list", help="list the keys and the one that signs (honours TOKENWARD_SIGNING_KID)")
    ls.add_argument("--dir", type=Path, required=True)
    retire = keys.add_parser("retire", help="delete a key that no longer signs")
    retire.add_argument("--dir", type=Path, required=True)
    retire.add_argument("--kid", required=True)
    clients = sub.add_parser("clients", help="client credentials").add_subparsers(dest="clients_command", required=True)
    hs = clients.add_parser("hash-secret", help="print a new secret and its secret_hash (or hash the given one)")
    hs.add_argument("--secret", help="hash this secret instead of generating one (at least 22 characters)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=os.environ.get("TOKENWARD_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "keys":
            signing_kid = os.environ.get("TOKENWARD_SIGNING_KID") or None
            if args.keys_command == "list":
                return keys_list(args.dir, signing_kid)
            if args.keys_command == "retire":
                return keys_retire(args.dir, args.kid, signing_kid)
            return keys_generate(args.dir, args.kid, args.alg)
        if args.command == "clients":
            secret = args.secret or new_secret()
            if len(secret) < 22:
                raise ConfigError("client secrets must have at least 22 characters (128 bits)")
            if not args.secret:
                print(f"secret = {secret}")
            print(f'secret_hash = "{hash_secret(secret)}"')
            return 0
        settings = _settings()
        logs.configure(settings.log_level, settings.log_format)
        if args.command == "check":
            return check(settings)
        return serve(settings)
    except ConfigError as exc:
        print(f"tokenward: configuration error: {exc.detail}", file=sys.stderr)
        return 2
