"""SQLite settings that behave alike on every Django the project supports.

Django 5.1 added the SQLite ``OPTIONS`` ``transaction_mode`` and ``init_command``.
Several threads or gunicorn workers writing one file need both: ``BEGIN IMMEDIATE``
so that concurrent writers wait for the lock (a deferred transaction that upgrades
fails at once with "database is locked"), and WAL so readers run while a writer
commits. On older Django this package is also a database backend (``ENGINE``)
doing the same two things.
"""

from __future__ import annotations

from typing import Any

import django

NATIVE_OPTIONS = django.VERSION >= (5, 1)


def sqlite_database(name: object, pragmas: str, timeout: int = 20) -> dict[str, Any]:
    """A ``DATABASES`` entry: ``BEGIN IMMEDIATE``, ``pragmas`` on connect, a busy timeout."""
    if NATIVE_OPTIONS:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name,
            "OPTIONS": {
                "timeout": timeout,
                "transaction_mode": "IMMEDIATE",
                "init_command": pragmas,
            },
        }
    return {
        "ENGINE": "config.sqlite_compat",
        "NAME": name,
        "OPTIONS": {"timeout": timeout},
        "PRAGMAS": pragmas,
    }
