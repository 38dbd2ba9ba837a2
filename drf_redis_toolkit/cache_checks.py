"""System check for ``@cache_response`` arguments that name an attribute of the view.

drf-extensions' string forms (``timeout="list_cache_timeout"``,
``key_func="calculate_cache_key"``) are read from the view at request time, so
a misspelt name would otherwise be a 500 at the first GET. This check finds
every decorated handler of the DRF views the URLconf routes to and fails
``manage.py check`` when the view (its class, or ``as_view(**initkwargs)``)
has no such attribute, or when a ``key_func`` name is not callable.
"""

from __future__ import annotations

from typing import Any

from django.core import checks

from drf_redis_toolkit.throttle_checks import _ViewStandIn, routed_views

_MISSING = object()


def _problems(where: str, cls: type, initkwargs: dict[str, Any]) -> list[str]:
    view = _ViewStandIn(cls, initkwargs)
    found = []
    for handler_name in sorted(dir(cls)):
        options = getattr(getattr(cls, handler_name, None), "_drt_cache_options", None)
        if options is None:
            continue
        for argument in ("timeout", "key_func"):
            name = getattr(options, argument)
            if not isinstance(name, str):
                continue
            value = initkwargs.get(name, getattr(cls, name, _MISSING))
            if value is _MISSING:
                found.append(
                    f"@cache_response({argument}={name!r}) on {where}.{handler_name}: "
                    f"the view has no attribute {name!r}"
                )
            elif argument == "key_func" and not callable(getattr(view, name)):
                found.append(
                    f"@cache_response(key_func={name!r}) on {where}.{handler_name}: "
                    f"{name!r} is not callable"
                )
    return found


@checks.register(checks.Tags.compatibility)
def check_cache_response_arguments(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """``drf_redis_toolkit.E004``: a ``@cache_response`` string naming no attribute of its view."""
    from rest_framework.views import APIView

    messages: list[checks.CheckMessage] = []
    seen: set[str] = set()
    for where, cls, initkwargs in routed_views():
        if not issubclass(cls, APIView):
            continue
        for problem in _problems(where, cls, initkwargs):
            if problem not in seen:
                seen.add(problem)
                messages.append(checks.Error(problem, id="drf_redis_toolkit.E004"))
    return messages
