"""Django settings for the test suite (SQLite; fakeredis unless a test picks one).

The sample API's apps (``sample_api/catalog``, ``sample_api/carts``) are
installed too, so its end-to-end tests run in the same suite; tests that need
the sample's own settings apply them with the ``settings`` fixture.
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sample_api"))

from config.sqlite_compat import sqlite_database

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_redis_toolkit",
    "tests.testapp",
    "catalog",
    "carts",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
# A file, not ":memory:": tests with threads (transaction=True) need every
# connection to see committed rows; shared-cache in-memory SQLite would answer
# "database table is locked" instead of waiting. One file per pytest process.
DATABASES = {
    "default": {
        **sqlite_database(":memory:", "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"),
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"drt-tests-{os.getpid()}.sqlite3")},
    }
}
# Tests log in with passwords; the production hasher would cost ~0.3 s a login.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DRF_REDIS_TOOLKIT = {
    "CONNECTION_FACTORY": "tests.servers.fake_redis",
    "ASYNC_CONNECTION_FACTORY": "tests.servers.fake_async_redis",
}
REST_FRAMEWORK = {
    "DEFAULT_THROTTLE_CLASSES": [],
    "DEFAULT_THROTTLE_RATES": {"anon": "100/min", "user": "100/min"},
}
