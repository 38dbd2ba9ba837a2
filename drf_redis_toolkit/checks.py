"""Django system checks: toolkit settings (the throttles' checks are in ``throttle_checks``)."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

# Registers the cache and throttle checks; they stay importable from here.
from drf_redis_toolkit.cache_checks import check_cache_response_arguments  # noqa: F401
from drf_redis_toolkit.throttle_checks import (  # noqa: F401
    check_client_identification,
    check_throttle_rates,
)


@checks.register(checks.Tags.compatibility)
def check_toolkit_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from drf_redis_toolkit.conf import toolkit_settings

    try:
        toolkit_settings.check()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="drf_redis_toolkit.E001")]
    return []
