"""Invalidate cached data when models change: after the commit, wherever the write came from.

Rules say which names a model instance's cached data lives under. They come
from the ``INVALIDATION`` setting::

    "INVALIDATION": {
        "catalog.Product": {
            "namespaces": ["categories:all"],
            "keys": ["product:{pk}", "category:{category_id}:products", "products:all"],
        },
    }

and from Python, for what a template cannot say (``register()`` or the
``@invalidates`` decorator; functions receive a list of instances).

A name in ``namespaces`` has its generation bumped (every response cached under
it by ``drf_redis_toolkit.caching`` becomes unreachable, in O(1)). A name in
``keys`` is bumped too *and* deleted as a ``redis_client`` key, so data cached
with ``redis_client`` (``cache_product`` / ``get_cached_product``) goes as well.

The package has one module per job: ``rules`` (what a change invalidates),
``receivers`` (the signals that notice changes), ``querysets`` (writes that send
no signals) and ``delivery`` (after the commit, and what happens when Redis
cannot be reached). Import everything from here. See ``docs/invalidation.md``.
"""

from __future__ import annotations

from typing import Any

# ``_pending`` and ``_registry`` (the process's state) stay importable for tests that reset them.
from drf_redis_toolkit.invalidation.delivery import _pending as _pending
from drf_redis_toolkit.invalidation.delivery import (
    batch,
    cache_invalidated,
    invalidate,
    invalidate_now,
    is_pending,
    pending_invalidations,
    retry_pending,
)
from drf_redis_toolkit.invalidation.querysets import InvalidatingManager, InvalidatingQuerySet
from drf_redis_toolkit.invalidation.rules import (
    EMPTY,
    ModelRef,
    NameFunction,
    Names,
    invalidates,
    names_for,
    register,
    setup,
    unregister,
)
from drf_redis_toolkit.invalidation.rules import _registry as _registry

__all__ = [
    "EMPTY",
    "InvalidatingManager",
    "InvalidatingQuerySet",
    "ModelRef",
    "NameFunction",
    "Names",
    "batch",
    "cache_invalidated",
    "invalidate",
    "invalidate_namespace",
    "invalidate_now",
    "invalidates",
    "is_pending",
    "names_for",
    "pending_invalidations",
    "register",
    "retry_pending",
    "setup",
    "unregister",
]


def __getattr__(name: str) -> Any:
    # ``caching`` imports this package's delivery state; import it lazily so
    # ``invalidate_namespace`` can be re-exported here without a cycle.
    if name == "invalidate_namespace":
        from drf_redis_toolkit.caching import invalidate_namespace

        return invalidate_namespace
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
