"""Response caching for DRF views: rendered bytes in Redis, safe per user, O(1) invalidation.

A cached GET/HEAD request is answered like this, *after* DRF's ``initial()`` has
run authentication, permissions and throttles (a hit is never a way around them):

1. The view's hooks name the response (``get_cache_key``) and the namespace whose
   generation it depends on (``get_cache_namespace``). The toolkit always adds the
   view's URL arguments, the negotiated media type and format, the active
   language and, per user (the default), the user; ``keys.cache_entry_key``
   hashes all of it, so keys have a bounded length whatever the request carries.
2. One Lua call (``lua/cache_get.lua``) reads the namespace's generation and the
   entry stored under that generation; on a miss the same call takes a short
   single-flight lock. A hit costs one round trip, a miss one more (the write).
   A response that varied on request headers (``Vary``) left a *vary record*
   there instead, naming them: a second call looks up the variant holding the
   request's values of those headers.
3. A hit replays the stored bytes and headers: no serializer, no SQL. A matching
   ``If-None-Match`` gets ``304`` before the body is even decompressed.
4. A miss runs the view, renders it and stores the bytes under the generation
   read in step 2, *before* the view ran. ``invalidate_namespace()`` moves the
   generation on, so a response computed from data read before an invalidation
   can never be served after it (and is not even written, see ``cache_set.lua``).

Redis failures (outage, timeout, breaker open, a corrupt entry) are cache misses:
the view answers as if the cache did not exist. Entries are JSON metadata plus
raw bytes, never pickle, so whatever is planted in Redis cannot run code here.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import random
import re
import time
import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlencode, urlsplit

import redis
from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse, HttpResponseNotModified
from django.http.response import HttpResponseBase
from django.utils import translation
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import parse_etags
from rest_framework import permissions
from rest_framework.generics import GenericAPIView
from rest_framework.mixins import ListModelMixin, RetrieveModelMixin
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.views import APIView
from rest_framework.viewsets import ViewSetMixin

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import local_cache, signals
from drf_redis_toolkit.cache_entries import (
    Entry,
    encode_entry,
    local_bodies,
    make_etag,
    parse_entry,
)
from drf_redis_toolkit.cache_stats import counters, namespace_stats
from drf_redis_toolkit.conf import toolkit_settings
from drf_redis_toolkit.connection import guarded
from drf_redis_toolkit.drivers import (
    Call,
    Delete,
    Flow,
    Offload,
    Script,
    Sleep,
    is_async,
    run_async,
    run_sync,
)
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.generations import bump_generations
from drf_redis_toolkit.invalidation.delivery import is_pending
from drf_redis_toolkit.request_host import validated_host

__all__ = [
    "CACHE_STATUS_HEADER",
    "CacheResponseMixin",
    "cache_response",
    "default_cache_key",
    "default_namespace",
    "invalidate_key",
    "invalidate_namespace",
    "invalidate_view",
    "make_etag",
    "namespace_stats",
]

logger = logging.getLogger("drf_redis_toolkit")

#: Response header telling whether the cache answered (``HIT``) or the view ran (``MISS``).
CACHE_STATUS_HEADER = "X-Cache"
#: Only these methods are ever cached; HEAD is answered from the GET entry.
CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
#: Seconds a single-flight lock lives (a crashed holder blocks its key at most this long).
DEFAULT_LOCK_TIMEOUT = 3.0
#: XFetch's beta (Vattani et al., VLDB 2015): 1.0 is the paper's recommended default.
XFETCH_BETA = 1.0
#: Milliseconds waiters skip waiting after the lock holder found the answer uncacheable.
PASS_THROUGH_MS = 1000

_CACHE_ERRORS: tuple[type[BaseException], ...] = (RedisUnavailable, redis.RedisError)
_POLL_FIRST = 0.002
_POLL_MAX = 0.05
# States returned by cache_get.lua.
_HIT, _LOCKED, _WAIT, _PASS, _REFRESH, _UNCHANGED, _VARY = 0, 1, 2, 3, 4, 5, 6
# Headers a 304 repeats from the full response (RFC 9110, section 15.4.5).
_NOT_MODIFIED_HEADERS = frozenset({"cache-control", "content-location", "expires", "vary"})
# The one request header the key covers without its value: DRF's content
# negotiation reads it, and the key holds the negotiated media type and format.
_NEGOTIATED_VARY = frozenset({"accept"})
# A header name as RFC 9110 allows it (a token), lower-cased.
_HEADER_NAME_RE = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$")
# Object-permission handling of one request.
_NO_RECHECK, _RECHECK, _DONT_CACHE = 0, 1, 2

F = TypeVar("F", bound=Callable[..., Any])


# -- what a request's entry is called --------------------------------------------


def default_namespace(view_class: type) -> str:
    """The namespace of a view that names none: its dotted class path.

    Readable in ``redis-cli`` when short; ``keys.namespace_tag`` hashes it otherwise.
    """
    return f"{view_class.__module__}.{view_class.__qualname__}"


def default_cache_key(view: Any, request: Request) -> str:
    """What tells one response of a view apart from another: the URL and the API version.

    Scheme and host are included because DRF writes absolute URLs into bodies
    (pagination links, hyperlinked serializers). Query parameters are sorted by
    name, so ``?a=1&b=2`` and ``?b=2&a=1`` share an entry, while the order of
    repeated values (``?tag=x&tag=y``) is kept: it can mean something. The
    negotiated format, the language and the user are added by the toolkit
    whatever this returns.
    """
    django_request = request._request
    query = django_request.GET
    encoded = urlencode(sorted(query.lists()), doseq=True) if query else ""
    version = request.version
    # repr() of a tuple of strings is unambiguous (quotes and escapes), and cheap.
    return repr(
        (
            django_request.scheme,
            validated_host(django_request),
            django_request.path,
            encoded,
            "" if version is None else str(version),
        )
    )


def _user_part(request: Request) -> str | None:
    return _user_identity(request.user)


def _user_identity(user: Any) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return "anon"
    pk = getattr(user, "pk", None)
    if pk is None:
        return None  # an authenticated user we cannot tell apart from others: never cache
    meta = getattr(user, "_meta", None)
    label = meta.label_lower if meta is not None else type(user).__qualname__
    return f"{label}:{pk}"


def _key_material(
    request: Request, hook_key: str, user: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    """Everything that identifies one entry inside its namespace, unambiguously joined."""
    renderer = getattr(request, "accepted_renderer", None)
    return _material(
        getattr(request, "accepted_media_type", "") or "",
        getattr(renderer, "format", "") or "",
        translation.get_language() or "",
        user,
        hook_key,
        _url_arguments(args, kwargs),
    )


def _url_arguments(args: Any, kwargs: Any) -> str:
    """The view's URL arguments, canonical: one request dispatched with ``pk=1`` and then
    ``pk=2`` (a batch endpoint, a reused test request) must not share an entry."""
    if not args and not kwargs:
        return _NO_URL_ARGUMENTS
    return repr(
        (
            tuple(str(arg) for arg in args or ()),
            tuple(sorted((str(name), str(value)) for name, value in (kwargs or {}).items())),
        )
    )


#: ``_url_arguments()`` of a route with none (most list views), built once.
_NO_URL_ARGUMENTS = repr(((), ()))


def _material(
    media_type: str, format: str, language: str, user: str, hook_key: str, url_arguments: str
) -> str:
    # "GET": HEAD is answered from the GET entry.
    return repr(("GET", media_type, format, language, user, hook_key, url_arguments))


# -- object permissions ------------------------------------------------------------


@functools.cache
def _class_checks_objects(permission_class: Any) -> bool:
    method = getattr(permission_class, "has_object_permission", None)
    return method is not None and method is not permissions.BasePermission.has_object_permission


def _checks_objects(permission: Any) -> bool:
    """Whether ``permission`` can refuse an object that ``has_permission`` admitted."""
    if isinstance(permission, (permissions.AND, permissions.OR)):
        return _checks_objects(permission.op1) or _checks_objects(permission.op2)
    if isinstance(permission, permissions.NOT):
        return True  # NOT of the default (True) refuses every object
    return _class_checks_objects(cast(Hashable, type(permission)))


@functools.lru_cache(maxsize=256)
def _classes_check_objects(permission_classes: tuple[Any, ...]) -> bool:
    return any(_checks_objects(permission()) for permission in permission_classes)


def _permissions_check_objects(view: Any) -> bool:
    """Whether any of the view's permissions can refuse an object.

    DRF's own ``get_permissions()`` makes one instance of each of
    ``permission_classes``, so its answer is the classes': kept per tuple of
    classes rather than instantiated again on every cached request. A view that
    overrides ``get_permissions()`` is asked each time.
    """
    if type(view).get_permissions is APIView.get_permissions and "get_permissions" not in vars(
        view
    ):
        try:
            return _classes_check_objects(tuple(view.permission_classes))
        except TypeError:  # an unhashable entry (an old DRF's ``IsA | IsB``)
            pass
    return any(_checks_objects(p) for p in view.get_permissions())


def _object_permission_mode(view: Any) -> int:
    """How a hit must respect object permissions (``has_object_permission``).

    A hit skips the handler, so ``get_object()`` and its object-permission check
    would be skipped too. When the view's permissions check objects (or the view
    sets ``cache_recheck_object_permissions = True``), a hit on a detail route of
    a ``GenericAPIView`` calls ``get_object()`` first: one query, no
    serialization, and a refused user gets 403/404 as without the cache. A plain
    ``APIView`` checks objects in code the toolkit cannot replay, so it is not
    cached, unless it declares ``cache_recheck_object_permissions = False``.
    """
    declared = getattr(view, "cache_recheck_object_permissions", None)
    if declared is False:
        return _NO_RECHECK
    if declared is None and not _permissions_check_objects(view):
        return _NO_RECHECK
    if isinstance(view, GenericAPIView):
        lookup = view.lookup_url_kwarg or view.lookup_field
        # DRF itself never checks object permissions on list routes.
        return _RECHECK if lookup in view.kwargs else _NO_RECHECK
    return _DONT_CACHE


# -- the per-request plan --------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """Arguments given to ``@cache_response`` (``None``: not given, ask the view).

    A string ``timeout`` or ``key_func`` names an attribute of the view, read per
    request (drf-extensions' style: ``timeout="list_cache_timeout"``).
    """

    timeout: int | str | None = None
    namespace: str | Callable[[Any, Request], str] | None = None
    per_user: bool | None = None
    key_func: Callable[..., str | None] | str | None = None
    early_refresh: bool | None = None
    lock_timeout: float | None = None


#: The options of a mixin view (none given): one frozen instance, not one per request.
_NO_OPTIONS = _Options()


class _Plan:
    """What one request's entry is called and how it is cached (resolved once per request).

    A response that varies on request headers is stored under a *variant* key:
    the request's key (``base_key``) then holds a vary record naming those
    headers, and ``variant()`` derives the plan of the variant a request needs.
    """

    __slots__ = (
        "early_refresh",
        "keys",
        "lock_ms",
        "material",
        "namespace",
        "per_user",
        "recheck",
        "record",
        "ttl_ms",
    )

    def __init__(
        self,
        namespace: str,
        material: str,
        ttl_ms: int,
        per_user: bool,
        early_refresh: bool,
        lock_ms: int,
        recheck: bool,
    ) -> None:
        self.namespace, self.material, self.ttl_ms = namespace, material, ttl_ms
        self.keys = list(keyspace.cache_keys(namespace, material))
        self.per_user, self.early_refresh = per_user, early_refresh
        self.lock_ms, self.recheck = lock_ms, recheck
        #: The vary record this plan was reached through: ``(raw, epoch, headers)``.
        self.record: tuple[bytes, str, tuple[str, ...]] | None = None

    @property
    def gen_key(self) -> str:
        return self.keys[0]

    @property
    def entry_key(self) -> str:
        return self.keys[1]

    @property
    def lock_key(self) -> str:
        return self.keys[2]

    @property
    def base_key(self) -> str:
        """The request's own key (where a vary record lives)."""
        return keyspace.cache_keys(self.namespace, self.material)[1]

    def variant_keys(
        self, request: Request, epoch: str, headers: tuple[str, ...]
    ) -> tuple[str, str, str]:
        """The keys of the variant of this request's entry for ``headers``' values."""
        values = tuple((name, _header_value(request, name)) for name in headers)
        return keyspace.cache_keys(self.namespace, repr((self.material, epoch, values)))

    def variant(self, request: Request, raw: bytes) -> _Plan | None:
        """The plan of the variant a vary record names; ``None`` if the record is unreadable."""
        record = _parse_record(raw)
        if record is None:
            return None
        plan = _Plan.__new__(_Plan)
        for name in _Plan.__slots__:
            setattr(plan, name, getattr(self, name))
        plan.keys = list(self.variant_keys(request, *record))
        plan.record = (raw, *record)
        return plan


def _header_value(request: Request, name: str) -> str | None:
    """The request's value of header ``name``, normalised (spaces around commas dropped)."""
    meta_name = name.upper().replace("-", "_")
    if meta_name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        meta_name = "HTTP_" + meta_name
    value = request._request.META.get(meta_name)
    if value is None:
        return None
    return ",".join(part.strip() for part in str(value).split(","))


def _vary_headers(response: HttpResponseBase) -> tuple[str, ...] | None:
    """The request headers the key must hold by value for ``response``; ``None``: never store.

    Every header of ``Vary`` counts except ``Accept`` (the key holds DRF's
    negotiated media type and format). ``Vary: *`` (or a name that is not a
    header name) is never stored. A body with a ``Content-Encoding`` varies on
    ``Accept-Encoding`` even if the view forgot to say so: a gzip body must never
    reach a client that asked for ``identity``.
    """
    names: set[str] = set()
    for token in (response.get("Vary") or "").split(","):
        name = token.strip().lower()
        if not name or name in _NEGOTIATED_VARY:
            continue
        if name == "*" or not _HEADER_NAME_RE.match(name):
            return None
        names.add(name)
    if response.has_header("Content-Encoding"):
        names.add("accept-encoding")
    return tuple(sorted(names))


def _vary_record(gen: int, epoch: str, headers: tuple[str, ...]) -> bytes:
    return b"%d V %s %s\n" % (gen, epoch.encode(), ",".join(headers).encode())


def _parse_record(raw: bytes) -> tuple[str, tuple[str, ...]] | None:
    """``(epoch, headers)`` of a vary record ``"<gen> V <epoch> <h1,h2>\\n"``; ``None`` if bad."""
    try:
        _gen, marker, epoch, names = raw.decode("ascii").rstrip("\n").split(" ")
    except (UnicodeDecodeError, ValueError):
        return None
    headers = tuple(names.split(","))
    if marker != "V" or not epoch.isalnum() or not all(map(_HEADER_NAME_RE.match, headers)):
        return None
    return epoch, headers


# -- drf-extensions' argument styles ----------------------------------------------


@functools.cache
def _takes_extensions_arguments(func: Any) -> bool:
    """Whether ``func`` is a drf-extensions key function (a ``KeyConstructor``, or
    ``(view_instance, view_method, request, args, kwargs)``), called with keywords."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    named = {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    named.discard("self")
    if named & {"view_instance", "view_method"}:
        return True
    # KeyConstructor.__call__(self, **kwargs): keywords only.
    return not named and any(p.kind is p.VAR_KEYWORD for p in parameters)


def _call_key_func(
    func: Callable[..., Any],
    view: Any,
    request: Request,
    handler: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    method: bool = False,
) -> Any:
    """Call a key function in its own style: drf-extensions' keywords, else
    ``func(view, request)`` (a view method named by a string: ``func(request)``)."""
    target = getattr(func, "__func__", func)
    try:
        extensions = _takes_extensions_arguments(target)
    except TypeError:  # an unhashable callable
        extensions = _takes_extensions_arguments.__wrapped__(target)
    if extensions:
        return func(
            view_instance=view, view_method=handler, request=request, args=args, kwargs=kwargs
        )
    return func(request) if method else func(view, request)


def _view_attribute(view: Any, name: str, argument: str) -> Any:
    try:
        return getattr(view, name)
    except AttributeError:
        raise ImproperlyConfigured(
            f"@cache_response({argument}={name!r}) on {type(view).__qualname__}: "
            f"the view has no attribute {name!r}"
        ) from None


def _extensions_kind(view: Any) -> str | None:
    """``"list"`` or ``"object"``: which of drf-extensions' ``list_cache_*`` /
    ``object_cache_*`` attributes apply to this request (its mixin caches
    ``list()`` and ``retrieve()``); ``None`` for any other handler."""
    action = getattr(view, "action", None)
    if action == "list":
        return "list"
    if action == "retrieve":
        return "object"
    if isinstance(view, ViewSetMixin) or not isinstance(view, GenericAPIView):
        return None
    lookup = view.lookup_url_kwarg or view.lookup_field
    if lookup in (getattr(view, "kwargs", None) or {}):
        return "object" if isinstance(view, RetrieveModelMixin) else None
    return "list" if isinstance(view, ListModelMixin) else None


def _extensions_attribute(view: Any, suffix: str) -> Any:
    # Most views set neither attribute: two lookups, not the route analysis.
    listed = getattr(view, f"list_cache_{suffix}", None)
    if listed is None and getattr(view, f"object_cache_{suffix}", None) is None:
        return None
    kind = _extensions_kind(view)
    return None if kind is None else getattr(view, f"{kind}_cache_{suffix}", None)


def _make_plan(
    view: Any,
    request: Request,
    options: _Options | None,
    handler: Any = None,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> _Plan | None:
    """Resolve the view's hooks for this request; ``None`` means "do not cache it"."""
    opts = options or _NO_OPTIONS
    kwargs = kwargs or {}
    mixin = isinstance(view, CacheResponseMixin)
    key_func = opts.key_func
    named = isinstance(key_func, str)
    if isinstance(key_func, str):
        key_func = _view_attribute(view, key_func, "key_func")
    if key_func is not None:
        hook_key = _call_key_func(key_func, view, request, handler, args, kwargs, named)
    elif mixin:
        hook_key = view.get_cache_key(request)
    else:
        hook_key = default_cache_key(view, request)
    if hook_key is None:
        return None
    per_user = opts.per_user
    if per_user is None:
        per_user = view.cache_per_user if mixin else True
    user = _user_part(request) if per_user else "*"
    if user is None:
        return None
    timeout: Any = opts.timeout
    if isinstance(timeout, str):
        timeout = _view_attribute(view, timeout, "timeout")
    if timeout is None:
        if mixin:
            timeout = view.get_cache_timeout(request)
        else:
            timeout = toolkit_settings.CACHE_DEFAULT_TIMEOUT
    if timeout is not None and timeout <= 0:
        return None
    recheck = _object_permission_mode(view)
    if recheck == _DONT_CACHE:
        return None
    namespace = opts.namespace
    if callable(namespace):
        namespace = namespace(view, request)
    elif namespace is None:
        namespace = view.get_cache_namespace(request) if mixin else default_namespace(type(view))
    early = opts.early_refresh
    if early is None:
        early = bool(getattr(view, "cache_early_refresh", False))
    lock_timeout = opts.lock_timeout
    if lock_timeout is None:
        lock_timeout = getattr(view, "cache_lock_timeout", DEFAULT_LOCK_TIMEOUT)
    return _Plan(
        namespace,
        _key_material(request, str(hook_key), user, args, kwargs),
        0 if timeout is None else int(timeout * 1000),
        per_user,
        early and timeout is not None,
        max(1, int(lock_timeout * 1000)),
        recheck == _RECHECK,
    )


# -- Redis calls -----------------------------------------------------------------

#: Where lock tokens come from: a generator of the toolkit's own, seeded from
#: ``os.urandom`` and again in every forked child, so ``random.seed()`` in user code
#: (a seeded test, a worker) cannot make two processes draw the same tokens, and a
#: hit makes no ``getrandom`` system call (``os.urandom`` cost a hit a microsecond).
_token_source = random.Random()
os.register_at_fork(after_in_child=_token_source.seed)


def _lock_token() -> str:
    """A single-flight lock's holder: 64 random bits, unique among one key's holders."""
    return f"{_token_source.getrandbits(64):016x}"


_last_error_log = [0.0]


def _redis_failed(exc: BaseException) -> None:
    """Decide what a Redis failure on the cache path means: a miss, and a log line.

    Outages are logged by the circuit breaker once per trip; anything else (a
    script error, an out-of-memory refusal) at most once a minute.
    """
    if isinstance(exc, RedisUnavailable):
        logger.debug("drf_redis_toolkit: cache skipped: %s", exc)
        return
    now = time.monotonic()
    if now - _last_error_log[0] >= 60:
        _last_error_log[0] = now
        logger.warning(
            "drf_redis_toolkit: cache call failed (%s: %s); serving uncached",
            type(exc).__name__,
            exc,
        )


def _lookup(
    plan: _Plan, token: str, factor: float, offer: str = ""
) -> Flow[tuple[int, bytes, int]]:
    """One round trip: the generation, the entry (or just its head, if ``offer`` is its
    ETag) and, on a miss, the single-flight lock. With ``LOCAL_CACHE``, maybe none."""
    if toolkit_settings.LOCAL_CACHE:
        return (yield from local_cache.lookup(plan.keys, token, plan.lock_ms, factor))
    gen, raw, state, _pttl = yield Script(
        "cache_get", plan.keys, [token, plan.lock_ms, factor, offer]
    )
    return int(gen), raw or b"", int(state)


def _placement(
    plan: _Plan, request: Request, gen: int, headers: tuple[str, ...]
) -> tuple[str, tuple[bytes, bool] | None]:
    """Where a response varying on ``headers`` is stored: ``(entry key, vary record)``.

    No headers: the request's own key (replacing any vary record). Otherwise a
    variant key holding the request's values of ``headers``, and a vary record at
    the request's key naming them. A record read before the view ran is kept (its
    epoch names the variants already stored) if it still names the same headers;
    otherwise a new epoch starts, so variants of a deleted or replaced record
    (``invalidate_view``) can never be reached again.
    """
    if not headers:
        return plan.base_key, None
    if plan.record is not None and plan.record[2] == headers:
        raw, epoch, _ = plan.record
        return plan.variant_keys(request, epoch, headers)[1], (raw, True)
    epoch = os.urandom(8).hex()
    key = plan.variant_keys(request, epoch, headers)[1]
    return key, (_vary_record(gen, epoch, headers), False)


def _store(
    plan: _Plan,
    gen: int,
    value: bytes,
    token: str | None,
    entry_key: str,
    record: tuple[bytes, bool] | None,
) -> Flow[None]:
    keys = [plan.gen_key, entry_key, plan.lock_key]
    args: list[Any] = [gen, value, plan.ttl_ms, token or ""]
    if record is not None:
        keys.append(plan.base_key)
        args += [record[0], "1" if record[1] else "0"]
    try:
        yield Script("cache_set", keys, args)
    except _CACHE_ERRORS as exc:
        _redis_failed(exc)


def _release(plan: _Plan, token: str, pass_through: bool) -> Flow[None]:
    try:
        yield Script(
            "cache_unlock",
            [plan.lock_key],
            [token, min(PASS_THROUGH_MS, plan.lock_ms) if pass_through else 0],
        )
    except _CACHE_ERRORS as exc:
        _redis_failed(exc)


def _discard(plan: _Plan) -> Flow[None]:
    try:
        yield Delete(plan.entry_key)
    except _CACHE_ERRORS as exc:
        _redis_failed(exc)


def _wait(plan: _Plan, token: str, offer: str) -> Flow[tuple[int | None, bytes, int]]:
    """Poll while another request computes the entry; give up after the lock's lifetime.

    Returns what the last lookup said (a hit, the lock, a pass-through), or
    ``_PASS`` when the time is up: the caller then runs the view itself rather
    than fail. ``gen`` is ``None`` if Redis failed meanwhile (do not store).
    """
    budget = max(1.0, plan.lock_ms / 1000)
    deadline = time.monotonic() + budget
    delay = _POLL_FIRST
    gen: int | None = None
    for _ in range(int(budget / _POLL_FIRST) + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        yield Sleep(min(delay, left))
        delay = min(delay * 2, _POLL_MAX)
        try:
            gen, raw, state = yield from _lookup(plan, token, 0, offer)
        except _CACHE_ERRORS as exc:
            _redis_failed(exc)
            return None, b"", _PASS
        if state != _WAIT:
            return gen, raw, state
    return gen, b"", _PASS


def _offer(request: Request, known: Entry | None) -> str:
    """The ETag to show ``cache_get.lua``: a body held here, else the client's."""
    if known is not None:
        return known.etag
    header = request._request.META.get("HTTP_IF_NONE_MATCH")
    if not header or "," in header:
        return ""
    return header.strip().removeprefix("W/")


def _if_none_match(request: Request, etag: str) -> bool:
    header = request._request.META.get("HTTP_IF_NONE_MATCH")
    if not header:
        return False
    if header == etag:
        return True
    tags = parse_etags(header)
    if "*" in tags:
        return True
    bare = etag.removeprefix("W/")
    return any(tag.removeprefix("W/") == bare for tag in tags)


def _not_modified(headers: Any, etag: str, status: str) -> HttpResponseNotModified:
    response = HttpResponseNotModified()
    for name, value in headers.items():
        if name.lower() in _NOT_MODIFIED_HEADERS:
            response[name] = value
    response["ETag"] = etag
    response[CACHE_STATUS_HEADER] = status
    return response


_CORRUPT = object()


def _replay(
    view: Any, request: Request, plan: _Plan, raw: bytes, known: Entry | None
) -> Flow[HttpResponseBase | object | None]:
    """Answer from a stored entry.

    Returns the response; ``None`` if the body is needed but Redis sent only the
    head (the client's ETag matched the entry, but not the way a 304 needs);
    ``_CORRUPT`` after deleting an entry that cannot be decoded.
    """
    parsed = parse_entry(raw, known)
    if parsed is None:
        yield from _discard(plan)
        return _CORRUPT
    entry, stored, compressed = parsed
    if plan.recheck:
        # Raises PermissionDenied / NotFound like the handler would.
        yield Call(view.get_object)
    if _if_none_match(request, entry.etag):
        return _not_modified(entry.headers, entry.etag, "HIT")
    body = entry.body
    if body is None:
        if not stored:
            return None
        try:
            body = zlib.decompress(stored) if compressed else stored
        except zlib.error:
            yield from _discard(plan)
            return _CORRUPT
        entry.body = body
        entry.size += len(body)
        local_bodies.put(plan.entry_key, entry)
    try:
        response = HttpResponse(body, status=entry.status, headers=entry.headers)
    except (ValueError, TypeError):  # a header Django refuses: corrupt after all
        local_bodies.discard(plan.entry_key)
        yield from _discard(plan)
        return _CORRUPT
    response["ETag"] = entry.etag
    response[CACHE_STATUS_HEADER] = "HIT"
    return response


def _mark_per_user(response: HttpResponseBase) -> None:
    patch_cache_control(response, private=True)
    patch_vary_headers(response, ("Cookie", "Authorization"))


def _cacheable(view: Any, request: Request, response: HttpResponseBase, plan: _Plan) -> bool:
    """The rules no hook can relax: 200 only, no cookies, no streaming, no no-store."""
    if response.status_code != 200 or response.streaming:
        return False
    if isinstance(getattr(request, "accepted_renderer", None), BrowsableAPIRenderer):
        return False  # an HTML page with forms, CSRF tokens and the user's name
    if response.cookies or response.has_header("Set-Cookie"):
        return False
    cache_control = response.get("Cache-Control")
    if cache_control:
        directives = {part.split("=", 1)[0].strip().lower() for part in cache_control.split(",")}
        if "no-store" in directives or "no-cache" in directives:
            return False
        if "private" in directives and not plan.per_user:
            return False
    if isinstance(view, CacheResponseMixin):
        return bool(view.should_cache_response(request, response))
    return True


def _csrf_state(request: Request) -> tuple[bool, Any]:
    """Whether ``get_token()`` was called for this request, and the CSRF secret.

    ``get_token()`` (called by the view, a template, ``ensure_csrf_cookie`` or any
    code before the view) sets ``CSRF_COOKIE_NEEDS_UPDATE`` (every supported Django:
    ``CSRF_COOKIE_USED`` went with Django 4.1).
    """
    meta = request._request.META
    used = bool(meta.get("CSRF_COOKIE_NEEDS_UPDATE"))
    return used, meta.get("CSRF_COOKIE")


def _client_specific(request: Request, before: tuple[bool, Any]) -> bool:
    """Whether this request's answer may hold a CSRF token, which belongs to one client.

    A token read before the view ran can still end up in the body, so a flag
    already set before counts as much as one set during it. A secret created
    meanwhile counts too: a nested view under ``csrf_protect`` may have sent its
    cookie and reset the flag before this view's answer is stored.
    """
    used, secret = _csrf_state(request)
    return used or before[0] or secret != before[1]


class _SessionWatch:
    """Tell whether the handler (and rendering) read ``request.session``.

    ``accessed`` is cleared while the handler runs and restored after (or-ed with
    what the handler did), so ``SessionMiddleware`` still sees every access.
    Reads made before the handler (authentication, permissions) do not count:
    they run again on every hit, and the user is in the key when per user.
    """

    __slots__ = ("before", "session")

    def __init__(self, request: Request) -> None:
        session = getattr(request._request, "session", None)
        self.session = session if hasattr(session, "accessed") else None
        self.before = False
        if self.session is not None:
            self.before = bool(self.session.accessed)
            self.session.accessed = False

    @property
    def read(self) -> bool:
        return self.session is not None and bool(self.session.accessed)

    def restore(self) -> None:
        if self.session is not None:
            self.session.accessed = bool(self.session.accessed) or self.before


# -- the request path ------------------------------------------------------------


def _find(
    plan: _Plan, request: Request, token: str, factor: float
) -> Flow[tuple[_Plan, int | None, bytes, int, Entry | None]]:
    """Look the request up; through a vary record, look up the variant it names.

    Returns the plan finally looked up, the generation, the raw answer, the
    state and the body this process holds for that key (if any).
    """
    for _ in range(2):
        known = local_bodies.get(plan.entry_key)
        offer = _offer(request, known)
        gen: int | None
        gen, raw, state = yield from _lookup(plan, token, factor, offer)
        if state == _WAIT:
            gen, raw, state = yield from _wait(plan, token, offer)
        if state != _VARY:
            return plan, gen, raw, state, known
        variant = plan.variant(request, raw) if plan.record is None else None
        if variant is None:  # unreadable, or a record where a variant belongs
            yield from _discard(plan)
            return plan, gen, b"", _PASS, None
        plan = variant
    raise AssertionError("unreachable")  # pragma: no cover


def _count(namespace: str, hit: bool) -> Flow[None]:
    """Count a hit or a miss; when the counts are due, flush them as a step of the flow.

    Statistics never fail the request they ride on: ``flush()`` keeps the counts
    for later whatever its call to Redis raises, and the step failing to run at all
    (a loop whose worker threads are shut down) is logged here.
    """
    if counters.add(namespace, hit):
        try:
            yield Offload(counters.flush)
        except Exception:  # bookkeeping, never the request's outcome
            logger.debug("drf_redis_toolkit: cache statistics not flushed", exc_info=True)


def _serve(
    view: Any,
    request: Request,
    handler: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: _Options | None,
) -> Flow[HttpResponseBase]:
    """One cached request, written once: ``drivers.run_sync`` or ``run_async`` carries it out."""
    if request.method not in CACHEABLE_METHODS:
        return (yield Call(handler, request, *args, **kwargs))
    plan = _make_plan(view, request, options, handler, args, kwargs)
    if plan is None:
        return (yield Call(handler, request, *args, **kwargs))
    if is_pending(plan.namespace):
        # This process changed data under the namespace and Redis has not been
        # told yet: any entry may be stale. A miss, and nothing stored.
        signals.cache_bypassed(plan.namespace, signals.PENDING_INVALIDATION, view, request)
        yield from _count(plan.namespace, hit=False)
        return (yield from _compute(view, request, handler, args, kwargs, plan, None, None))
    token = _lock_token()
    factor = -math.log(1.0 - random.random()) * XFETCH_BETA if plan.early_refresh else 0
    gen: int | None
    try:
        plan, gen, raw, state, known = yield from _find(plan, request, token, factor)
        if state in (_HIT, _UNCHANGED):
            response = yield from _replay(view, request, plan, raw, known)
            if response is None:  # only the head came back, and it is the body we need
                gen, raw, state = yield from _lookup(plan, token, factor, "")
                if state == _HIT:
                    response = yield from _replay(view, request, plan, raw, None)
            if isinstance(response, HttpResponseBase):
                signals.cache_served(plan.namespace, response, view, request)
                yield from _count(plan.namespace, hit=True)
                return response
            if state in (_HIT, _UNCHANGED):
                state = _PASS  # corrupt, and deleted: compute and store without the lock
    except _CACHE_ERRORS as exc:
        _redis_failed(exc)
        gen, state = None, _PASS
    yield from _count(plan.namespace, hit=False)
    signals.cache_missed(plan.namespace, view, request, early=state == _REFRESH, failed=gen is None)
    held = token if state in (_LOCKED, _REFRESH) else None
    return (yield from _compute(view, request, handler, args, kwargs, plan, gen, held))


def _compute(
    view: Any,
    request: Request,
    handler: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    plan: _Plan,
    gen: int | None,
    token: str | None,
) -> Flow[HttpResponseBase]:
    """Run the view; store its rendered answer under ``gen`` if it may be served again."""
    started = time.perf_counter()
    cacheable = False
    etag = ""
    session = _SessionWatch(request)
    csrf = _csrf_state(request)
    try:
        response = yield Call(handler, request, *args, **kwargs)
        # Render now, as DRF would right after: dispatch() finalizing it a
        # second time is harmless (it only re-sets the same headers).
        response = view.finalize_response(request, response, *args, **kwargs)
        vary = _vary_headers(response)  # before the toolkit's own per-user Vary
        if plan.per_user:
            _mark_per_user(response)
        cacheable = (
            gen is not None and vary is not None and _cacheable(view, request, response, plan)
        )
        if cacheable:
            render = getattr(response, "render", None)
            if render is not None:
                render()
        if cacheable and (session.read or _client_specific(request, csrf)):
            # The body may hold this session's data or this client's CSRF token.
            cacheable = False
        if cacheable:
            body = response.content  # type: ignore[attr-defined]
            etag = response.get("ETag") or ""
            hashed = not etag
            if hashed:
                etag = make_etag(body)
                response["ETag"] = etag
            compute_ms = int((time.perf_counter() - started) * 1000)
            value, meta_raw = encode_entry(cast(int, gen), compute_ms, response, body, etag, hashed)
            kept = _Kept(plan, request, cast(int, gen), cast(tuple, vary), value, meta_raw, token)
            kept.entry = Entry(etag, meta_raw, 200, json.loads(meta_raw)["h"], hashed, body)
            deferred = getattr(view, _DEFERRED_ATTR, None)
            if isinstance(deferred, list):
                # The mixin's as_view() stores it once the view returns: a Vary added
                # outside the handler (a decorator on dispatch) is known by then.
                kept.seen = _vary_names(response)
                deferred.append(kept)
            else:
                yield from kept.store(kept.vary)
            token = None  # cache_set.lua released it, or the deferred store will
    finally:
        session.restore()
        if token is not None:
            yield from _release(plan, token, pass_through=not cacheable)
    if not cacheable:
        signals.not_stored(plan.namespace, view, request, response, gen, vary)
    response[CACHE_STATUS_HEADER] = "MISS"
    if cacheable and _if_none_match(request, etag):
        return _not_modified(response, etag, "MISS")
    return response


#: Where the mixin's ``as_view()`` hands a dispatch the list its stores wait in.
_DEFERRED_ATTR = "_drt_deferred_stores"


def _vary_names(response: HttpResponseBase) -> frozenset[str]:
    return frozenset(
        t.strip().lower() for t in (response.get("Vary") or "").split(",") if t.strip()
    )


class _Kept:
    """One answer to store: now, or once the whole view has returned (``finish``)."""

    __slots__ = ("entry", "gen", "meta_raw", "plan", "request", "seen", "token", "value", "vary")

    def __init__(
        self,
        plan: _Plan,
        request: Request,
        gen: int,
        vary: tuple[str, ...],
        value: bytes,
        meta_raw: bytes,
        token: str | None,
    ) -> None:
        self.plan, self.request, self.gen, self.vary = plan, request, gen, vary
        self.value, self.meta_raw, self.token = value, meta_raw, token
        self.seen: frozenset[str] = frozenset()
        self.entry: Entry | None = None

    def store(self, vary: tuple[str, ...]) -> Flow[None]:
        entry_key, record = _placement(self.plan, self.request, self.gen, vary)
        yield from _store(self.plan, self.gen, self.value, self.token, entry_key, record)
        if self.entry is not None:
            local_bodies.put(entry_key, self.entry)

    def finish(self, final: HttpResponseBase | None) -> Flow[None]:
        """Store under the ``Vary`` of the answer the view returned (``None``: it raised).

        Headers that a decorator on ``dispatch`` added to ``Vary`` after the
        handler join the key; ``Vary: *`` there means not stored at all.
        """
        outer = None if final is None else _vary_headers(final)
        if outer is None:
            if self.token is not None:
                yield from _release(self.plan, self.token, pass_through=True)
            return
        added = set(outer) - self.seen
        yield from self.store(tuple(sorted({*self.vary, *added})))


# -- public API: mixin and decorator -----------------------------------------------


class CacheResponseMixin:
    """Cache the GET/HEAD answers of an ``APIView`` or viewset in Redis.

    Put it first among the bases (``class V(CacheResponseMixin, ListAPIView)``):
    it runs after DRF's ``initial()`` (authentication, permissions, throttles),
    then answers from the cache or runs the handler (``get``, ``list``,
    ``retrieve`` or any GET ``@action``) and stores its rendered bytes.

    By default every entry belongs to one user (``cache_per_user = True``): an
    authenticated user's response is never served to anyone else. Set it to
    ``False`` for public data. Override the hooks to change what an entry is
    called (``get_cache_key``), how long it lives (``get_cache_timeout``), which
    namespace invalidates it (``get_cache_namespace``) and to veto storing a
    response (``should_cache_response``).
    """

    #: Seconds an entry lives; ``None``: ``CACHE_DEFAULT_TIMEOUT``; ``0``: do not cache.
    cache_timeout: int | None = None
    #: Namespace whose generation the entries depend on; ``None``: the view's dotted path.
    cache_namespace: str | None = None
    #: ``True``: one entry per user (and one for anonymous requests); ``False``: shared.
    cache_per_user: bool = True
    #: Recompute hot entries shortly before they expire (XFetch), so they never stampede.
    cache_early_refresh: bool = False
    #: Lifetime of the single-flight lock; waiters wait this long (at least 1 s).
    cache_lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    #: ``None``: re-check object permissions on hits when the permissions define them;
    #: ``True``: always on detail routes; ``False``: the view declares hits safe.
    cache_recheck_object_permissions: bool | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        if APIView in mro and mro.index(APIView) < mro.index(CacheResponseMixin):
            raise ImproperlyConfigured(
                f"{cls.__qualname__}: put CacheResponseMixin before the DRF view class in "
                "its bases, or the cache is never consulted"
            )

    @classmethod
    def as_view(cls, *args: Any, **initkwargs: Any) -> Callable[..., Any]:
        """DRF's view function, storing answers once it returns (sync views).

        A ``Vary`` that a decorator on ``dispatch`` adds after the handler is then
        part of the key. adrf's async views store as the handler returns.
        """
        view = super().as_view(*args, **initkwargs)  # type: ignore[misc]
        if iscoroutinefunction(view):
            return cast("Callable[..., Any]", view)

        @functools.wraps(view)
        def cached_view(request: Any, *view_args: Any, **view_kwargs: Any) -> Any:
            stores: list[_Kept] = []
            outer = request.__dict__.get(_DEFERRED_ATTR)
            request.__dict__[_DEFERRED_ATTR] = stores
            response = None
            try:
                response = view(request, *view_args, **view_kwargs)
            finally:
                if outer is None:
                    request.__dict__.pop(_DEFERRED_ATTR, None)
                else:
                    request.__dict__[_DEFERRED_ATTR] = outer
                for kept in stores:
                    run_sync(kept.finish(response))
            return response

        return cached_view

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Run DRF's checks, then route this request's GET/HEAD handler through the cache."""
        # This dispatch's store list (from as_view()); a view nested in the handler
        # gets its own, or none.
        setattr(self, _DEFERRED_ATTR, request._request.__dict__.pop(_DEFERRED_ATTR, None))
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        method = request.method
        if method in CACHEABLE_METHODS:
            name = method.lower()
            handler = getattr(self, name, None)
            # A handler decorated with @cache_response caches itself.
            if handler is not None and getattr(handler, "_drt_cache_options", None) is None:
                serve = _aserve_partial if is_async(handler) else _serve_partial  # adrf
                setattr(self, name, functools.partial(serve, self, handler))

    def get_cache_key(self, request: Request) -> str | None:
        """Name this request's response inside its namespace; ``None`` skips the cache.

        The toolkit adds the URL arguments, the format, the language and (per
        user) the user to whatever this returns, then hashes it: return something
        readable. drf-extensions' ``list_cache_key_func`` / ``object_cache_key_func``
        are honoured on ``list`` / ``retrieve``.
        """
        key_func = _extensions_attribute(self, "key_func")
        if key_func is not None:
            if not callable(key_func):
                raise ImproperlyConfigured(
                    f"{type(self).__qualname__}: list_cache_key_func / object_cache_key_func "
                    f"must be callable (a KeyConstructor or a function), not {key_func!r}"
                )
            # The handler function itself, as drf-extensions passes it (not the
            # wrapper initial() installed on the instance). HEAD is answered from
            # the GET entry, so it is keyed by the GET handler: a generic view's
            # class has no ``head`` (Django sets it on the instance).
            name = getattr(self, "action", None) or "get"
            handler = getattr(type(self), name, None)
            args, kwargs = getattr(self, "args", ()), getattr(self, "kwargs", {})
            key = _call_key_func(key_func, self, request, handler, args, kwargs)
            return cast("str | None", key)
        return default_cache_key(self, request)

    def get_cache_timeout(self, request: Request) -> int | None:
        """Seconds the entry lives (``None``: no expiry; ``0``: do not cache).

        ``cache_timeout`` first; else drf-extensions' ``list_cache_timeout`` /
        ``object_cache_timeout`` on ``list`` / ``retrieve``; else ``CACHE_DEFAULT_TIMEOUT``.
        """
        if self.cache_timeout is not None:
            return self.cache_timeout
        timeout = _extensions_attribute(self, "timeout")
        if timeout is not None:
            return cast(int, timeout)
        return cast("int | None", toolkit_settings.CACHE_DEFAULT_TIMEOUT)

    def get_cache_namespace(self, request: Request) -> str:
        """The namespace whose invalidation must drop this response.

        Return e.g. ``f"product:{pk}"`` for a detail and ``"products:all"`` for a
        list; ``invalidate_namespace(name)`` then drops every entry stored under it.
        """
        return self.cache_namespace or default_namespace(type(self))

    def should_cache_response(self, request: Request, response: HttpResponseBase) -> bool:
        """Veto storing ``response`` (already finalized, not yet rendered).

        Only asked about responses the toolkit would store anyway (GET/HEAD, 200,
        no cookie, not streaming, no ``no-store``): it can say no, never yes.
        """
        return True


def _serve_partial(
    view: Any, handler: Callable[..., HttpResponseBase], request: Request, *args: Any, **kwargs: Any
) -> HttpResponseBase:
    return run_sync(_serve(view, request, handler, args, kwargs, None))


async def _aserve_partial(
    view: Any, handler: Callable[..., Any], request: Request, *args: Any, **kwargs: Any
) -> HttpResponseBase:
    return await run_async(_serve(view, request, handler, args, kwargs, None))


def cache_response(
    timeout: int | str | Callable[..., Any] | None = None,
    *misplaced: Any,
    namespace: str | Callable[[Any, Request], str] | None = None,
    per_user: bool | None = None,
    key_func: Callable[..., str | None] | str | None = None,
    early_refresh: bool | None = None,
    lock_timeout: float | None = None,
    cache_errors: bool | None = None,
    cache: str | None = None,
) -> Any:
    """Cache a view method (``APIView.get``) or a viewset action (``list``, ``@action``).

    The arguments mirror the mixin's attributes without ``cache_``; ``None``
    means "the view's attribute if it has one, else the default". Only
    ``timeout`` may be given by position. ``namespace`` may be a callable
    ``(view, request) -> str`` (e.g. ``lambda v, r: f"product:{v.kwargs['pk']}"``)
    and ``key_func(view, request)`` replaces ``get_cache_key``. drf-extensions'
    forms work too: ``timeout="list_cache_timeout"`` reads that attribute of the
    view, ``key_func="calculate_cache_key"`` calls that method of the view, and a
    ``KeyConstructor`` or a ``(view_instance, view_method, request, args, kwargs)``
    function is called with those keywords. Usable bare, as ``@cache_response``.
    """
    if misplaced:
        raise TypeError(
            "cache_response() takes only timeout by position; pass the others by name, "
            f"e.g. cache_response({timeout!r}, key_func=...) (drf-extensions' second "
            f"positional argument is key_func; here it would be lost): got {misplaced!r}"
        )
    if cache_errors:
        raise TypeError(
            "cache_response(cache_errors=True) is not supported: only 200 answers are ever "
            "cached (an error served from the cache would hide the recovery)"
        )
    if cache is not None:
        raise TypeError(
            f"cache_response(cache={cache!r}) is not supported: responses are cached in the "
            "toolkit's Redis (DRF_REDIS_TOOLKIT['REDIS_URL']), not in a Django cache alias"
        )
    if callable(timeout) and not isinstance(timeout, str):  # used bare: @cache_response
        return cache_response()(timeout)
    for name, value in (("timeout", timeout), ("key_func", key_func)):
        if isinstance(value, str) and not value.isidentifier():
            raise TypeError(
                f"cache_response({name}={value!r}): a string must name an attribute of the view"
            )
    if timeout is not None and not isinstance(timeout, (int, float, str)):
        raise TypeError(f"cache_response(timeout={timeout!r}): seconds, or a view attribute name")
    if key_func is not None and not (callable(key_func) or isinstance(key_func, str)):
        raise TypeError(f"cache_response(key_func={key_func!r}): a callable or a method name")
    seconds = cast("int | str | None", timeout)
    options = _Options(seconds, namespace, per_user, key_func, early_refresh, lock_timeout)

    def decorator(func: F) -> F:
        if is_async(func):

            @functools.wraps(func)
            async def awrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Any:
                return await run_async(
                    _serve(view, request, func.__get__(view), args, kwargs, options)
                )

            awrapper._drt_cache_options = options  # type: ignore[attr-defined]
            return cast(F, awrapper)

        @functools.wraps(func)
        def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
            return run_sync(_serve(view, request, func.__get__(view), args, kwargs, options))

        wrapper._drt_cache_options = options  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorator


# -- invalidation ----------------------------------------------------------------


def invalidate_namespace(*names: str) -> None:
    """Drop every cached response of each namespace, in O(1) each (a generation bump).

    Raises ``RedisUnavailable`` if Redis cannot be reached: an invalidation that
    was not delivered is the caller's to retry or report, never silently lost.
    """
    if names:
        bump_generations(*names)


def invalidate_key(
    namespace: str,
    key: str,
    *,
    user: Any = None,
    media_type: str = "application/json",
    format: str = "json",
    language: str | None = None,
    url_args: tuple[Any, ...] = (),
    url_kwargs: dict[str, Any] | None = None,
) -> bool:
    """Delete the one entry a view's ``get_cache_key()`` named ``key`` in ``namespace``.

    ``user=None`` names the shared entry (``cache_per_user = False``); pass a user
    instance, or ``AnonymousUser()``, for a per-user entry. The media type,
    format and language must be those the entry was negotiated with, ``url_args``
    and ``url_kwargs`` the view's URL arguments (``url_kwargs={"pk": 3}``). Returns
    whether an entry was deleted. Raises ``RedisUnavailable`` like
    ``invalidate_namespace``.
    """
    user_part = "*" if user is None else _user_identity(user)
    if user_part is None:
        return False
    language = language or translation.get_language() or ""
    material = _material(
        media_type, format, language, user_part, key, _url_arguments(url_args, url_kwargs)
    )
    entry_key = keyspace.cache_entry_key(namespace, material)
    with guarded() as client:
        deleted = client.delete(entry_key)
    local_cache.forget(entry_key)
    return bool(deleted)


def invalidate_view(
    url: str,
    *,
    user: Any = None,
    accept: str | None = None,
    language: str | None = None,
) -> bool:
    """Delete the one entry that a GET of ``url`` would be answered from.

    The URL is resolved and the view asked for its key, namespace and format
    exactly as for a live request (without running authentication, permissions
    or the handler), so custom hooks are honoured. Give the absolute URL clients
    use (``https://shop.example.com/api/products/?page=2``): scheme and host are
    part of the default key. ``user`` is the user whose per-user entry to drop
    (``None``: the anonymous one). Returns whether an entry was deleted, ``False``
    for a view that does not cache. To drop every variant, invalidate the namespace.
    """
    from django.urls import Resolver404, resolve
    from rest_framework.test import APIRequestFactory, force_authenticate

    parts = urlsplit(url)
    path = parts.path or "/"
    extra: dict[str, Any] = {}
    if parts.netloc:
        extra["HTTP_HOST"] = parts.netloc
    if accept:
        extra["HTTP_ACCEPT"] = accept
    target = path + (f"?{parts.query}" if parts.query else "")
    django_request = APIRequestFactory().get(target, secure=parts.scheme == "https", **extra)
    if user is not None:
        force_authenticate(django_request, user=user)
    try:
        match = resolve(path)
    except Resolver404:
        return False
    view_class = getattr(match.func, "cls", None) or getattr(match.func, "view_class", None)
    if view_class is None or not issubclass(view_class, APIView):
        return False
    view = view_class(**getattr(match.func, "initkwargs", {}))
    actions = getattr(match.func, "actions", None)
    if actions:
        view.action_map = actions
        for method, action in actions.items():
            setattr(view, method, getattr(view, action))
    view.setup(django_request, *match.args, **match.kwargs)
    view.args, view.kwargs = match.args, match.kwargs
    with translation.override(language or translation.get_language()):
        request = view.initialize_request(django_request, *match.args, **match.kwargs)
        view.request = request
        view.format_kwarg = view.get_format_suffix(**match.kwargs)
        request.accepted_renderer, request.accepted_media_type = view.perform_content_negotiation(
            request
        )
        request.version, request.versioning_scheme = view.determine_version(
            request, *match.args, **match.kwargs
        )
        handler = getattr(view, "get", None)
        options = getattr(handler, "_drt_cache_options", None)
        if options is None and not isinstance(view, CacheResponseMixin):
            return False
        plan = _make_plan(view, request, options, handler, match.args, match.kwargs)
    if plan is None:
        return False
    with guarded() as client:
        deleted = client.delete(plan.entry_key)
    local_cache.forget(plan.entry_key)
    return bool(deleted)
