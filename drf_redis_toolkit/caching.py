"""Response caching for DRF views: rendered bytes in Redis, safe per user, O(1) invalidation.

A cached GET/HEAD request is answered like this, *after* DRF's ``initial()`` has
run authentication, permissions and throttles (a hit is never a way around them):

1. The view's hooks name the response (``get_cache_key``) and the namespace whose
   generation it depends on (``get_cache_namespace``). The toolkit always adds the
   negotiated media type and format, the active language and, per user (the
   default), the user; ``keys.cache_entry_key`` hashes all of it, so keys have a
   bounded length whatever the request carries.
2. One Lua call (``lua/cache_get.lua``) reads the namespace's generation and the
   entry stored under that generation; on a miss the same call takes a short
   single-flight lock. A hit costs one round trip, a miss one more (the write).
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
import json
import logging
import math
import os
import random
import time
import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlencode, urlsplit

import redis
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse, HttpResponseNotModified
from django.http.response import HttpResponseBase
from django.utils import translation
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import parse_etags
from rest_framework import permissions
from rest_framework.generics import GenericAPIView
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from drf_redis_toolkit import keys as keyspace
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
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.generations import bump_generations
from drf_redis_toolkit.invalidation.delivery import is_pending
from drf_redis_toolkit.scripts import get_script

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
_HIT, _LOCKED, _WAIT, _PASS, _REFRESH, _UNCHANGED = 0, 1, 2, 3, 4, 5
# Headers a 304 repeats from the full response (RFC 9110, section 15.4.5).
_NOT_MODIFIED_HEADERS = frozenset({"cache-control", "content-location", "expires", "vary"})
# Request headers a response may vary on and still be cached: the key covers them.
_KEYED_VARY = frozenset({"accept", "accept-language", "accept-encoding"})
_PER_USER_VARY = frozenset({"cookie", "authorization"})
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
            django_request.get_host(),
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


def _key_material(request: Request, hook_key: str, user: str) -> str:
    """Everything that identifies one entry inside its namespace, unambiguously joined."""
    renderer = getattr(request, "accepted_renderer", None)
    return _material(
        getattr(request, "accepted_media_type", "") or "",
        getattr(renderer, "format", "") or "",
        translation.get_language() or "",
        user,
        hook_key,
    )


def _material(media_type: str, format: str, language: str, user: str, hook_key: str) -> str:
    # "GET": HEAD is answered from the GET entry.
    return repr(("GET", media_type, format, language, user, hook_key))


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
    if declared is None and not any(_checks_objects(p) for p in view.get_permissions()):
        return _NO_RECHECK
    if isinstance(view, GenericAPIView):
        lookup = view.lookup_url_kwarg or view.lookup_field
        # DRF itself never checks object permissions on list routes.
        return _RECHECK if lookup in view.kwargs else _NO_RECHECK
    return _DONT_CACHE


# -- the per-request plan --------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """Arguments given to ``@cache_response`` (``None``: not given, ask the view)."""

    timeout: int | None = None
    namespace: str | Callable[[Any, Request], str] | None = None
    per_user: bool | None = None
    key_func: Callable[[Any, Request], str | None] | None = None
    early_refresh: bool | None = None
    lock_timeout: float | None = None


class _Plan:
    """What one request's entry is called and how it is cached (resolved once per request)."""

    __slots__ = ("early_refresh", "keys", "lock_ms", "namespace", "per_user", "recheck", "ttl_ms")

    def __init__(
        self,
        namespace: str,
        keys: list[str],
        ttl_ms: int,
        per_user: bool,
        early_refresh: bool,
        lock_ms: int,
        recheck: bool,
    ) -> None:
        self.namespace, self.keys, self.ttl_ms = namespace, keys, ttl_ms
        self.per_user, self.early_refresh = per_user, early_refresh
        self.lock_ms, self.recheck = lock_ms, recheck

    @property
    def gen_key(self) -> str:
        return self.keys[0]

    @property
    def entry_key(self) -> str:
        return self.keys[1]

    @property
    def lock_key(self) -> str:
        return self.keys[2]


def _make_plan(view: Any, request: Request, options: _Options | None) -> _Plan | None:
    """Resolve the view's hooks for this request; ``None`` means "do not cache it"."""
    opts = options or _Options()
    mixin = isinstance(view, CacheResponseMixin)
    if opts.key_func is not None:
        hook_key = opts.key_func(view, request)
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
    if opts.timeout is not None:
        timeout = opts.timeout
    elif mixin:
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
    gen_key, entry_key, lock_key = keyspace.cache_keys(
        namespace, _key_material(request, str(hook_key), user)
    )
    return _Plan(
        namespace,
        [gen_key, entry_key, lock_key],
        0 if timeout is None else int(timeout * 1000),
        per_user,
        early and timeout is not None,
        max(1, int(lock_timeout * 1000)),
        recheck == _RECHECK,
    )


# -- Redis calls -----------------------------------------------------------------

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


def _lookup(plan: _Plan, token: str, factor: float, offer: str = "") -> tuple[int, bytes, int]:
    """One round trip: the generation, the entry (or just its head, if ``offer`` is its
    ETag) and, on a miss, the single-flight lock."""
    with guarded() as client:
        gen, raw, state, _pttl = get_script("cache_get")(
            keys=plan.keys, args=[token, plan.lock_ms, factor, offer], client=client
        )
    return int(gen), raw or b"", int(state)


def _store(plan: _Plan, gen: int, value: bytes, token: str | None) -> None:
    try:
        with guarded() as client:
            get_script("cache_set")(
                keys=plan.keys, args=[gen, value, plan.ttl_ms, token or ""], client=client
            )
    except _CACHE_ERRORS as exc:
        _redis_failed(exc)


def _release(plan: _Plan, token: str, pass_through: bool) -> None:
    try:
        with guarded() as client:
            get_script("cache_unlock")(
                keys=[plan.lock_key],
                args=[token, min(PASS_THROUGH_MS, plan.lock_ms) if pass_through else 0],
                client=client,
            )
    except _CACHE_ERRORS as exc:
        _redis_failed(exc)


def _discard(plan: _Plan) -> None:
    try:
        with guarded() as client:
            client.delete(plan.entry_key)
    except _CACHE_ERRORS as exc:
        _redis_failed(exc)


def _wait(plan: _Plan, token: str, offer: str) -> tuple[int | None, bytes, int]:
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
        time.sleep(min(delay, left))
        delay = min(delay * 2, _POLL_MAX)
        try:
            gen, raw, state = _lookup(plan, token, 0, offer)
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
) -> HttpResponseBase | object | None:
    """Answer from a stored entry.

    Returns the response; ``None`` if the body is needed but Redis sent only the
    head (the client's ETag matched the entry, but not the way a 304 needs);
    ``_CORRUPT`` after deleting an entry that cannot be decoded.
    """
    parsed = parse_entry(raw, known)
    if parsed is None:
        _discard(plan)
        return _CORRUPT
    entry, stored, compressed = parsed
    if plan.recheck:
        view.get_object()  # raises PermissionDenied / NotFound like the handler would
    if _if_none_match(request, entry.etag):
        return _not_modified(entry.headers, entry.etag, "HIT")
    body = entry.body
    if body is None:
        if not stored:
            return None
        try:
            body = zlib.decompress(stored) if compressed else stored
        except zlib.error:
            _discard(plan)
            return _CORRUPT
        entry.body = body
        entry.size += len(body)
        local_bodies.put(plan.entry_key, entry)
    try:
        response = HttpResponse(body, status=entry.status, headers=entry.headers)
    except (ValueError, TypeError):  # a header Django refuses: corrupt after all
        local_bodies.discard(plan.entry_key)
        _discard(plan)
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
    vary = response.get("Vary")
    if vary:
        allowed = _KEYED_VARY | _PER_USER_VARY if plan.per_user else _KEYED_VARY
        for token in vary.split(","):
            if token.strip().lower() not in allowed:  # includes "*"
                return False
    if isinstance(view, CacheResponseMixin):
        return bool(view.should_cache_response(request, response))
    return True


# -- the request path ------------------------------------------------------------


def _serve(
    view: Any,
    request: Request,
    handler: Callable[..., HttpResponseBase],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: _Options | None,
) -> HttpResponseBase:
    if request.method not in CACHEABLE_METHODS:
        return handler(request, *args, **kwargs)
    plan = _make_plan(view, request, options)
    if plan is None:
        return handler(request, *args, **kwargs)
    if is_pending(plan.namespace):
        # This process changed data under the namespace and Redis has not been
        # told yet: any entry may be stale. A miss, and nothing stored.
        counters.add(plan.namespace, hit=False)
        return _compute(view, request, handler, args, kwargs, plan, None, None)
    token = os.urandom(8).hex()
    factor = -math.log(1.0 - random.random()) * XFETCH_BETA if plan.early_refresh else 0
    known = local_bodies.get(plan.entry_key)
    offer = _offer(request, known)
    gen: int | None
    try:
        gen, raw, state = _lookup(plan, token, factor, offer)
        if state == _WAIT:
            gen, raw, state = _wait(plan, token, offer)
        if state in (_HIT, _UNCHANGED):
            response = _replay(view, request, plan, raw, known)
            if response is None:  # only the head came back, and it is the body we need
                gen, raw, state = _lookup(plan, token, factor, "")
                if state == _HIT:
                    response = _replay(view, request, plan, raw, None)
            if isinstance(response, HttpResponseBase):
                counters.add(plan.namespace, hit=True)
                return response
            if state in (_HIT, _UNCHANGED):
                state = _PASS  # corrupt, and deleted: compute and store without the lock
    except _CACHE_ERRORS as exc:
        _redis_failed(exc)
        gen, state = None, _PASS
    counters.add(plan.namespace, hit=False)
    held = token if state in (_LOCKED, _REFRESH) else None
    return _compute(view, request, handler, args, kwargs, plan, gen, held)


def _compute(
    view: Any,
    request: Request,
    handler: Callable[..., HttpResponseBase],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    plan: _Plan,
    gen: int | None,
    token: str | None,
) -> HttpResponseBase:
    """Run the view; store its rendered answer under ``gen`` if it may be shared."""
    started = time.perf_counter()
    cacheable = False
    etag = ""
    meta = request._request.META
    csrf_before = meta.get("CSRF_COOKIE_NEEDS_UPDATE")
    try:
        response = handler(request, *args, **kwargs)
        # Render now, as DRF would right after: dispatch() finalizing it a
        # second time is harmless (it only re-sets the same headers).
        response = view.finalize_response(request, response, *args, **kwargs)
        if plan.per_user:
            _mark_per_user(response)
        cacheable = gen is not None and _cacheable(view, request, response, plan)
        if cacheable:
            render = getattr(response, "render", None)
            if render is not None:
                render()
        if cacheable and not csrf_before and meta.get("CSRF_COOKIE_NEEDS_UPDATE"):
            cacheable = False  # the body holds a CSRF token (a form): it is this client's
        if cacheable:
            body = response.content  # type: ignore[attr-defined]
            etag = response.get("ETag") or ""
            hashed = not etag
            if hashed:
                etag = make_etag(body)
                response["ETag"] = etag
            compute_ms = int((time.perf_counter() - started) * 1000)
            value, meta_raw = encode_entry(cast(int, gen), compute_ms, response, body, etag, hashed)
            _store(plan, cast(int, gen), value, token)
            token = None  # cache_set.lua released it
            headers = json.loads(meta_raw)["h"]
            local_bodies.put(plan.entry_key, Entry(etag, meta_raw, 200, headers, hashed, body))
    finally:
        if token is not None:
            _release(plan, token, pass_through=not cacheable)
    response[CACHE_STATUS_HEADER] = "MISS"
    if cacheable and _if_none_match(request, etag):
        return _not_modified(response, etag, "MISS")
    return response


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

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Run DRF's checks, then route this request's GET/HEAD handler through the cache."""
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        method = request.method
        if method in CACHEABLE_METHODS:
            name = method.lower()
            handler = getattr(self, name, None)
            # A handler decorated with @cache_response caches itself.
            if handler is not None and getattr(handler, "_drt_cache_options", None) is None:
                setattr(self, name, functools.partial(_serve_partial, self, handler))

    def get_cache_key(self, request: Request) -> str | None:
        """Name this request's response inside its namespace; ``None`` skips the cache.

        The toolkit adds the format, language and (per user) the user to
        whatever this returns, then hashes it: return something readable.
        """
        return default_cache_key(self, request)

    def get_cache_timeout(self, request: Request) -> int | None:
        """Seconds the entry lives (``None``: no expiry; ``0``: do not cache)."""
        if self.cache_timeout is not None:
            return self.cache_timeout
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
    return _serve(view, request, handler, args, kwargs, None)


def cache_response(
    timeout: int | Callable[..., Any] | None = None,
    namespace: str | Callable[[Any, Request], str] | None = None,
    per_user: bool | None = None,
    key_func: Callable[[Any, Request], str | None] | None = None,
    *,
    early_refresh: bool | None = None,
    lock_timeout: float | None = None,
) -> Any:
    """Cache a view method (``APIView.get``) or a viewset action (``list``, ``@action``).

    The arguments mirror the mixin's attributes without ``cache_``; ``None``
    means "the view's attribute if it has one, else the default". ``namespace``
    may be a callable ``(view, request) -> str`` (e.g. ``lambda v, r:
    f"product:{v.kwargs['pk']}"``) and ``key_func(view, request)`` replaces
    ``get_cache_key``. Usable bare, as ``@cache_response``.
    """
    if callable(timeout):  # used bare: @cache_response
        return cache_response()(timeout)
    options = _Options(timeout, namespace, per_user, key_func, early_refresh, lock_timeout)

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
            return _serve(view, request, func.__get__(view), args, kwargs, options)

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
) -> bool:
    """Delete the one entry a view's ``get_cache_key()`` named ``key`` in ``namespace``.

    ``user=None`` names the shared entry (``cache_per_user = False``); pass a user
    instance, or ``AnonymousUser()``, for a per-user entry. The media type,
    format and language must be those the entry was negotiated with. Returns
    whether an entry was deleted. Raises ``RedisUnavailable`` like
    ``invalidate_namespace``.
    """
    user_part = "*" if user is None else _user_identity(user)
    if user_part is None:
        return False
    language = language or translation.get_language() or ""
    material = _material(media_type, format, language, user_part, key)
    with guarded() as client:
        deleted = client.delete(keyspace.cache_entry_key(namespace, material))
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
        plan = _make_plan(view, request, options)
    if plan is None:
        return False
    with guarded() as client:
        deleted = client.delete(plan.entry_key)
    return bool(deleted)
