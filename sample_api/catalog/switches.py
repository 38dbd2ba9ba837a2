"""Switches the load tests flip through settings (see ``SHOP_BASELINE`` in config/settings.py)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request


class ResponseCacheSwitch:
    """Put before ``CacheResponseMixin``: ``SHOP_RESPONSE_CACHE = False`` turns the cache off.

    The view then runs on every request, as if the mixin were not there, which
    is what the load tests' baseline measures the cache against.
    """

    def get_cache_timeout(self, request: Request) -> Any:
        if not getattr(settings, "SHOP_RESPONSE_CACHE", True):
            return 0
        return super().get_cache_timeout(request)  # type: ignore[misc]
