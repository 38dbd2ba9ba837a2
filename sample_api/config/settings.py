"""Settings of the sample e-commerce API. Reads ``REDIS_URL`` and (optionally) ``DATABASE_URL``."""

import importlib.util
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from config import sqlite_compat
from config.demo_redis import running_demo_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "sample-api-insecure-demo-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_redis_toolkit",
    "drf_spectacular",
    "catalog",
    "carts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Rate-limit headers on every throttled API response, and RATELIMIT_RULES
    # (the admin login) for requests that never reach a DRF view.
    "drf_redis_toolkit.middleware.RateLimitHeadersMiddleware",
    "drf_redis_toolkit.middleware.RateLimitMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def sqlite_database(name: object) -> dict:
    """SQLite that several gunicorn workers can share: WAL, ``BEGIN IMMEDIATE``, a busy timeout.

    Without ``BEGIN IMMEDIATE`` two concurrent write transactions both start as
    readers and one fails at once with "database is locked" when they upgrade;
    WAL lets readers run while a writer commits (``config.sqlite_compat`` does
    both on every supported Django).
    """
    pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    return sqlite_compat.sqlite_database(name, pragmas)


def database_from_url(url: str) -> dict:
    """A ``DATABASES`` entry from ``postgres://user:pass@host:port/name`` or ``sqlite:///path``."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        return sqlite_database(parsed.path[1:] or ":memory:")
    if parsed.scheme in ("postgres", "postgresql", "pgsql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parsed.path.lstrip("/"),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
        }
    raise ValueError(f"DATABASE_URL scheme {parsed.scheme!r} is not supported")


DATABASES = {
    "default": (
        database_from_url(os.environ["DATABASE_URL"])
        if os.environ.get("DATABASE_URL")
        else sqlite_database(BASE_DIR / "db.sqlite3")
    )
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

#: Invalidation on save and delete, as settings (see docs/invalidation.md). A
#: name under "keys" is deleted from redis_client *and* its namespace
#: generation is bumped; one under "namespaces" is bumped. Templates read the
#: instance's fields; when a product changes category, both categories' lists
#: are invalidated. Runs after the commit, for saves made anywhere (API, admin,
#: shell). Rules that need a query (cart owners) are in carts/invalidation.py.
SHOP_INVALIDATION = {
    "catalog.Product": {
        "keys": ["product:{pk}", "category:{category_id}:products", "products:all"],
    },
    "catalog.Category": {
        "namespaces": ["categories:all"],
        "keys": ["category:{pk}:products"],
    },
    "catalog.Tag": {
        "namespaces": ["products:all"],
    },
    "carts.Cart": {
        "keys": ["cart:user:{user_id}"],
    },
}

DRF_REDIS_TOOLKIT = {
    # REDIS_URL, else the Redis a running `make demo` uses (config/demo_redis.py).
    "REDIS_URL": os.environ.get("REDIS_URL") or running_demo_url() or "redis://127.0.0.1:6379/0",
    "CLUSTER": os.environ.get("REDIS_CLUSTER") == "1",
    "KEY_PREFIX": os.environ.get("REDIS_KEY_PREFIX", "shop"),
    "INVALIDATION": SHOP_INVALIDATION,
    "RATELIMIT_RULES": [
        {"path": r"^/admin/login/$", "methods": ["POST"], "rate": "5/min", "key": "ip"},
    ],
    # Prometheus metrics at /metrics when prometheus-client is installed (extra "metrics").
    "METRICS": importlib.util.find_spec("prometheus_client") is not None,
    # DRT_LOCAL_CACHE=1: cache hits from process memory (docs/local-cache.md). Off by default.
    "LOCAL_CACHE": os.environ.get("DRT_LOCAL_CACHE") == "1",
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PAGINATION_CLASS": "catalog.pagination.ProductPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "PAGE_SIZE": 20,
    "DEFAULT_THROTTLE_CLASSES": [
        "drf_redis_toolkit.throttling.AnonSlidingWindowThrottle",
        "drf_redis_toolkit.throttling.UserSlidingWindowThrottle",
    ],
    # Behind N trusted proxies (the load tests use 1 to give each simulated client its
    # address); 0 by default: the demo is reached directly, so X-Forwarded-For is ignored
    # (None would let any client pick a new identity per request: check W001).
    "NUM_PROXIES": int(os.environ.get("SHOP_NUM_PROXIES") or 0),
    # Generous by default so the load tests measure the API, not the limits;
    # override with SHOP_RATE_ANON / SHOP_RATE_USER / SHOP_RATE_CART_WRITE.
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("SHOP_RATE_ANON", "100/s,20000/hour"),
        "user": os.environ.get("SHOP_RATE_USER", "200/s,50000/hour"),
        "cart_write": os.environ.get("SHOP_RATE_CART_WRITE", "30/min"),
    },
}

#: The load tests' comparison mode (``make load MODE=baseline``): ``SHOP_BASELINE=1``
#: serves the same API without the toolkit's response cache and with DRF's own
#: throttles (``AnonRateThrottle``, ``UserRateThrottle``, ``ScopedRateThrottle``) on
#: django-redis. DRF reads one limit per scope: the first of each rate is kept.
SHOP_BASELINE = os.environ.get("SHOP_BASELINE") == "1"
SHOP_RESPONSE_CACHE = not SHOP_BASELINE
SHOP_CART_WRITE_THROTTLE = "drf_redis_toolkit.throttling.ScopedSlidingWindowThrottle"
if SHOP_BASELINE:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": DRF_REDIS_TOOLKIT["REDIS_URL"],
            "KEY_PREFIX": "baseline",
        }
    }
    REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ]
    REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
        scope: rate.split(",")[0]
        for scope, rate in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].items()
    }
    SHOP_CART_WRITE_THROTTLE = "rest_framework.throttling.ScopedRateThrottle"

SPECTACULAR_SETTINGS = {
    "TITLE": "drf-redis-toolkit sample shop",
    "DESCRIPTION": "Categories, products and carts, cached and throttled on Redis.",
    "VERSION": "1.0.0",
}
