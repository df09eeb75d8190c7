"""flask-jwt-extended benchmark peer with the documented Redis blocklist.

Follows the flask-jwt-extended "JWT Revoking / Blocklist" docs (Redis
variant): a ``token_in_blocklist_loader`` callback looks the token's ``jti``
up in Redis on every protected request, and revoking a token stores its
``jti`` in Redis with an expiry so the blocklist cleans itself up.

Endpoints
  POST /login           JSON {"username","password"} -> access + refresh token
  POST /refresh         refresh-token-protected -> new access token.  This is
                        the library's documented behaviour: the refresh token
                        is NOT rotated and stays valid (re-usable) until it
                        expires or is explicitly revoked via /logout.
  POST /refresh/rotate  (extra, NOT in the flask-jwt-extended docs) single-use
                        rotation: atomically blocklists the presented refresh
                        jti (Redis SET NX EX) and returns a new access+refresh
                        pair; a replayed refresh token gets 401.  Closest
                        equivalent of simplejwt ROTATE+BLACKLIST / Tokenward.
  GET  /protected       access-token-protected -> tiny JSON
  DELETE|POST /logout   revokes the presented token (access or refresh).

Configuration comes from environment variables set by ../run_peers.py.
"""
import os
import time
from datetime import timedelta

import redis
from flask import Flask, jsonify, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    get_jwt,
    get_jwt_identity,
    jwt_required,
)

ACCESS_EXPIRES = timedelta(minutes=15)
REFRESH_EXPIRES = timedelta(days=1)

app = Flask(__name__)
_alg = os.environ.get("PEER_JWT_ALGORITHM", "RS256")
app.config["JWT_ALGORITHM"] = _alg
app.config["JWT_ACCESS_TOKEN_EXPIRES"] = ACCESS_EXPIRES
app.config["JWT_REFRESH_TOKEN_EXPIRES"] = REFRESH_EXPIRES
app.config["JWT_TOKEN_LOCATION"] = ["headers"]

if _alg.startswith(("RS", "ES", "PS")):
    with open(os.environ["PEER_JWT_PRIVATE_KEY_FILE"], "rb") as fh:
        _priv_pem = fh.read()
    with open(os.environ["PEER_JWT_PUBLIC_KEY_FILE"], "rb") as fh:
        _pub_pem = fh.read()
    if os.environ.get("FLASK_PEER_PEM_STRING_KEYS") == "1":
        # Docs-literal: PEM strings in config.  PyJWT then re-parses (and
        # re-validates) the RSA private key on EVERY token it signs, which
        # costs ~40 ms per token with current `cryptography`.
        app.config["JWT_PRIVATE_KEY"] = _priv_pem.decode()
        app.config["JWT_PUBLIC_KEY"] = _pub_pem.decode()
    else:
        # Default: parse the keys once at start-up; PyJWT accepts key objects.
        from cryptography.hazmat.primitives.serialization import (
            load_pem_private_key,
            load_pem_public_key,
        )

        app.config["JWT_PRIVATE_KEY"] = load_pem_private_key(_priv_pem, None)
        app.config["JWT_PUBLIC_KEY"] = load_pem_public_key(_pub_pem)
else:
    app.config["JWT_SECRET_KEY"] = os.environ["PEER_FLASK_SECRET_KEY"]

jwt = JWTManager(app)

jwt_redis_blocklist = redis.Redis(
    host=os.environ.get("PEER_REDIS_HOST", "127.0.0.1"),
    port=int(os.environ.get("PEER_REDIS_PORT", "6379")),
    db=0,
    decode_responses=True,
)

BENCH_USER = os.environ.get("PEER_BENCH_USER", "bench")
BENCH_PASSWORD = os.environ.get("PEER_BENCH_PASSWORD", "bench-password")


def _remaining_ttl(payload):
    return max(1, int(payload["exp"] - time.time()))


@jwt.token_in_blocklist_loader
def check_if_token_is_revoked(jwt_header, jwt_payload: dict):
    jti = jwt_payload["jti"]
    token_in_redis = jwt_redis_blocklist.get(jti)
    return token_in_redis is not None


@app.post("/login")
def login():
    data = request.get_json(silent=True) or {}
    if data.get("username") != BENCH_USER or data.get("password") != BENCH_PASSWORD:
        return jsonify(msg="Bad username or password"), 401
    return jsonify(
        access_token=create_access_token(identity=BENCH_USER),
        refresh_token=create_refresh_token(identity=BENCH_USER),
    )


@app.post("/refresh")
@jwt_required(refresh=True)
def refresh():
    identity = get_jwt_identity()
    return jsonify(access_token=create_access_token(identity=identity))


@app.post("/refresh/rotate")
@jwt_required(refresh=True)
def refresh_rotate():
    payload = get_jwt()
    # SET NX makes "check + revoke" atomic: only one request can consume a
    # given refresh token, even under concurrent replay.
    if not jwt_redis_blocklist.set(payload["jti"], "", ex=_remaining_ttl(payload), nx=True):
        return jsonify(msg="Token has been revoked"), 401
    identity = payload["sub"]
    return jsonify(
        access_token=create_access_token(identity=identity),
        refresh_token=create_refresh_token(identity=identity),
    )


@app.get("/protected")
@jwt_required()
def protected():
    return jsonify(ok=True, user=get_jwt_identity())


@app.route("/logout", methods=["DELETE", "POST"])
@jwt_required(verify_type=False)
def logout():
    payload = get_jwt()
    jwt_redis_blocklist.set(payload["jti"], "", ex=_remaining_ttl(payload))
    return jsonify(msg=f"{payload['type'].capitalize()} token successfully revoked")




def make_tokens(n_refresh, out_path, access_out=None, refresh_out=None):
    """Write n_refresh fresh refresh tokens (one per line) plus, optionally,
    one access token and one long-lived refresh token."""
    with app.app_context():
        with open(out_path, "w") as fh:
            for _ in range(n_refresh):
                fh.write(create_refresh_token(identity=BENCH_USER) + "\n")
        if access_out:
            with open(access_out, "w") as fh:
                fh.write(create_access_token(identity=BENCH_USER) + "\n")
        if refresh_out:
            with open(refresh_out, "w") as fh:
                fh.write(create_refresh_token(identity=BENCH_USER) + "\n")


if __name__ == "__main__":
    import sys

    make_tokens(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
