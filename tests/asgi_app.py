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

application = get_asgi_application()
