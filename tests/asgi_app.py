"""The ASGI application ``tests/test_async_server.py`` serves under uvicorn.

The test suite's settings, with the URLs of ``tests.async_views``, the test
database file and the toolkit settings the test passes in the environment
(``DRT_TEST_DB``, ``DRT_TEST_TOOLKIT`` as JSON).
"""

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django.conf import settings

from tests import settings as test_settings

database = dict(test_settings.DATABASES["default"])
database["NAME"] = os.environ["DRT_TEST_DB"]
settings.configure(
    **{
        name: getattr(test_settings, name)
        for name in dir(test_settings)
        if name.isupper()
        and name not in ("DATABASES", "ROOT_URLCONF", "DRF_REDIS_TOOLKIT", "LOGGING")
    },
    DATABASES={"default": database},
    ROOT_URLCONF="tests.async_views",
    DRF_REDIS_TOOLKIT=json.loads(os.environ["DRT_TEST_TOOLKIT"]),
    # Tracebacks of 500s and the toolkit's warnings to stderr, which the test reads.
    LOGGING={
        "version": 1,
        "handlers": {"stderr": {"class": "logging.StreamHandler"}},
        "loggers": {
            "django.request": {"handlers": ["stderr"], "level": "ERROR"},
            "drf_redis_toolkit": {"handlers": ["stderr"], "level": "WARNING"},
        },
    },
)

from django.core.asgi import get_asgi_application  # noqa: E402

if os.environ.get("DRT_LOOP_GUARD") == "1":
    # Every sync Redis call made on the event loop is reported on stderr, which the
    # test reads; and the hit/miss counters flush on every request, not every 5 s,
    # so that path runs under the server's concurrency too.
    import builtins
    import sys

    from drf_redis_toolkit.cache_stats import counters
    from tests import loop_guard

    def _report(name: str) -> None:
        print(f"{loop_guard.REPORT}: {name}", file=sys.stderr, flush=True)

    loop_guard.install(_report, builtins.setattr)
    counters.interval, counters._due = 0.0, float("-inf")

application = get_asgi_application()
