"""Django system checks: toolkit settings and the throttle rates its classes will read."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from drf_redis_toolkit.rates import parse_rate


@checks.register(checks.Tags.compatibility)
def check_toolkit_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from drf_redis_toolkit.conf import toolkit_settings

    try:
        toolkit_settings.check()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="drf_redis_toolkit.E001")]
    return []


@checks.register(checks.Tags.compatibility)
def check_throttle_rates(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Parse every ``DEFAULT_THROTTLE_RATES`` entry with the toolkit's strict grammar.

    An error when a toolkit throttle is among ``DEFAULT_THROTTLE_CLASSES`` (the
    rate will be used by it); a warning otherwise, since DRF's own throttles
    accept rates (``"100/month"``) that mean something else than they say.
    """
    from rest_framework.settings import api_settings

    uses_toolkit = any(
        getattr(cls, "__module__", "").startswith("drf_redis_toolkit")
        for cls in api_settings.DEFAULT_THROTTLE_CLASSES
    )
    level = checks.Error if uses_toolkit else checks.Warning
    messages: list[checks.CheckMessage] = []
    for scope, rate in (api_settings.DEFAULT_THROTTLE_RATES or {}).items():
        if rate is None:
            continue
        try:
            parse_rate(rate, setting=f"REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'][{scope!r}]")
        except ImproperlyConfigured as exc:
            messages.append(level(str(exc), id="drf_redis_toolkit.E002"))
    return messages
