"""Minimal production-style Django + DRF + simplejwt project (benchmark peer).

Configured the way the simplejwt docs recommend for a refresh-token-revocation
setup: rotation on, blacklist-after-rotation on, token_blacklist app installed,
asymmetric signing (RS256) with keys loaded from files, DEBUG off, PostgreSQL
with persistent connections.  All environment-specific values come from
environment variables set by ../run_peers.py.
"""
import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"environment variable {name} is required")
    return value


SECRET_KEY = _env("PEER_DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "benchapp",
]

# API-only service: no sessions/CSRF/messages middleware (DRF JWT auth does not
# use them).  SecurityMiddleware + CommonMiddleware as in a default project.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "peerproject.urls"
WSGI_APPLICATION = "peerproject.wsgi.application"
TEMPLATES = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _env("PEER_DB_NAME", "tw_peer_bench"),
        "USER": _env("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "HOST": _env("PGHOST", "127.0.0.1"),
        "PORT": _env("PGPORT", "5432"),
        # Persistent connections (Django deployment checklist): one connection
        # per gunicorn sync worker, reused across requests.
        "CONN_MAX_AGE": 600,
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Only relevant for creating the benchmark user / the smoke-test login.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": (
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ),
    "DEFAULT_PERMISSION_CLASSES": ("rest_framework.permissions.IsAuthenticated",),
    "DEFAULT_RENDERER_CLASSES": ("rest_framework.renderers.JSONRenderer",),
    "DEFAULT_PARSER_CLASSES": ("rest_framework.parsers.JSONParser",),
    "UNAUTHENTICATED_USER": None,
}


def _read_key(var):
    path = os.environ.get(var)
    return Path(path).read_text() if path else ""


_ALGORITHM = os.environ.get("PEER_JWT_ALGORITHM", "RS256")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=5),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": _ALGORITHM,
    "SIGNING_KEY": _read_key("PEER_JWT_PRIVATE_KEY_FILE") if _ALGORITHM.startswith(("RS", "ES", "PS")) else SECRET_KEY,
    "VERIFYING_KEY": _read_key("PEER_JWT_PUBLIC_KEY_FILE") if _ALGORITHM.startswith(("RS", "ES", "PS")) else "",
    "AUTH_HEADER_TYPES": ("Bearer",),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "ERROR"}},
}
