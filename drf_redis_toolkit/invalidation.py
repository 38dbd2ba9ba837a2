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
the seed's way (``cache_product`` / ``get_cached_product``) goes as well.
Templates use the instance's fields (``{pk}``, ``{category_id}``); a template
whose field is ``None`` is skipped.

Receivers for ``pre_save``/``post_save``, ``post_delete`` and ``m2m_changed``
are connected per registered model (never globally, which would disable
Django's fast deletes for every model). When a foreign key changes, the names
of both the old and the new value are invalidated: ``pre_save`` reads the row as
it is in the database before it is overwritten. Writes that send no signals
are covered by ``InvalidatingQuerySet`` / ``InvalidatingManager``.

Nothing is invalidated before the transaction commits and nothing after a
rollback: delivery runs in ``transaction.on_commit``. If Redis cannot be reached
then, the names are logged at ERROR and kept in a bounded in-process record,
retried in the background and before every later invalidation; if the record
overflows, every generation and every key matching a registered ``keys``
template is dropped on recovery instead. See ``docs/invalidation.md``.
"""

from __future__ import annotations

import logging
import os
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache, partial
from typing import Any, TypeVar

import redis
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, models, router, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import Signal

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.conf import SETTING_NAME, toolkit_settings
from drf_redis_toolkit.exceptions import RedisUnavailable

logger = logging.getLogger("drf_redis_toolkit.invalidation")

__all__ = [
    "EMPTY",
    "InvalidatingManager",
    "InvalidatingQuerySet",
    "Names",
    "batch",
    "cache_invalidated",
    "invalidate",
    "invalidate_now",
    "invalidates",
    "names_for",
    "pending_invalidations",
    "register",
    "retry_pending",
    "unregister",
]

#: Sent after names were invalidated in Redis. ``sender`` is the model whose
#: change caused it (``None`` for a direct ``invalidate()``); keyword arguments
#: ``namespaces`` and ``keys`` are frozensets of the names.
cache_invalidated = Signal()

#: A function giving extra names for changed instances (always given a list).
NameFunction = Callable[[Sequence[Any]], Iterable[str] | None]
ModelRef = type[models.Model] | str
F = TypeVar("F", bound=NameFunction)

#: How many distinct names the in-process retry record holds before it gives up
#: on remembering them and drops everything on recovery instead.
MAX_PENDING = 10_000
_RETRY_FIRST_DELAY = 0.25
_RETRY_MAX_DELAY = 5.0
_RETRY_MAX_ATTEMPTS = 1_000  # then the thread ends; the next invalidation restarts it
_PK_CHUNK = 500
_OLD_ROW_ATTR = "_drt_invalidation_old_row"
_CLEARED_PKS_ATTR = "_drt_invalidation_cleared_pks"
_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Names:
    """The names one change invalidates: ``namespaces`` bumped, ``keys`` bumped and deleted."""

    namespaces: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()

    def __or__(self, other: Names) -> Names:
        return Names(self.namespaces | other.namespaces, self.keys | other.keys)

    def __bool__(self) -> bool:
        return bool(self.namespaces or self.keys)


EMPTY = Names()


# -- rules ----------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _template_fields(template: str) -> frozenset[str]:
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"template {template!r} does not parse: {exc}") from exc
    return frozenset(name for _, name, _, _ in parsed if name is not None)


_MODEL_FIELDS: dict[type[models.Model], dict[str, str]] = {}


def _model_fields(model: type[models.Model]) -> dict[str, str]:
    """``{usable name: attname}``: ``pk``, and every concrete field by name and attname."""
    usable = _MODEL_FIELDS.get(model)
    if usable is None:
        usable = {"pk": model._meta.pk.attname}
        for f in model._meta.concrete_fields:
            usable[f.name] = f.attname
            usable[f.attname] = f.attname
        _MODEL_FIELDS[model] = usable
    return usable


@dataclass
class _Rule:
    """Everything registered for one model, merged: templates and functions."""

    model: type[models.Model]
    namespaces: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    functions: list[tuple[NameFunction, bool]] = field(default_factory=list)  # (fn, as_keys)

    def add_templates(self, namespaces: Iterable[Any], keys: Iterable[Any], where: str) -> None:
        usable = _model_fields(self.model)
        for kind, items in (("namespaces", namespaces), ("keys", keys)):
            if isinstance(items, str):
                raise ImproperlyConfigured(f"{where}[{kind!r}] must be a list, not a string")
            for item in items:
                if callable(item):
                    self.functions.append((item, kind == "keys"))
                    continue
                if not isinstance(item, str) or not item:
                    raise ImproperlyConfigured(f"{where}[{kind!r}]: {item!r} is not a template")
                try:
                    names = _template_fields(item)
                except ValueError as exc:
                    raise ImproperlyConfigured(f"{where}[{kind!r}]: {exc}") from exc
                unknown = sorted(n for n in names if n not in usable)
                if unknown:
                    raise ImproperlyConfigured(
                        f"{where}[{kind!r}]: template {item!r} names {unknown}, which are not "
                        f"fields of {self.model._meta.label}; use 'pk' or one of "
                        f"{sorted(set(usable) - {'pk'})}"
                    )
                (self.keys if kind == "keys" else self.namespaces).append(item)

    def merged(self, other: _Rule) -> _Rule:
        return _Rule(
            self.model,
            [*self.namespaces, *other.namespaces],
            [*self.keys, *other.keys],
            [*self.functions, *other.functions],
        )

    @cached_property
    def tracked_fields(self) -> set[str]:
        """The attnames the templates read (besides the primary key)."""
        usable = _model_fields(self.model)
        pk = self.model._meta.pk.attname
        out: set[str] = set()
        for template in (*self.namespaces, *self.keys):
            out |= {usable[n] for n in _template_fields(template)}
        out.discard(pk)
        return out

    @cached_property
    def needs_old_state(self) -> bool:
        """Whether a save can change this rule's names (a template field, or any function)."""
        return bool(self.functions or self.tracked_fields)

    def names(self, instances: Sequence[models.Model]) -> Names:
        if not instances:
            return EMPTY
        usable = _model_fields(self.model)
        namespaces: set[str] = set()
        keys: set[str] = set()
        for template, target in [(t, namespaces) for t in self.namespaces] + [
            (t, keys) for t in self.keys
        ]:
            fields = _template_fields(template)
            for obj in instances:
                values = {n: obj.pk if n == "pk" else getattr(obj, usable[n]) for n in fields}
                if any(v is None for v in values.values()):
                    continue
                target.add(template.format_map(values))
        for function, as_keys in self.functions:
            produced = function(list(instances)) or ()
            if isinstance(produced, str):
                produced = [produced]
            (keys if as_keys else namespaces).update(str(n) for n in produced)
        return Names(frozenset(namespaces), frozenset(keys))


class _Registry:
    """Rules from the setting and from Python, and the receivers wired for them."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.python: dict[type[models.Model], _Rule] = {}
        self.from_settings: dict[type[models.Model], _Rule] = {}
        self.settings_loaded = False
        self.connected: set[type[models.Model]] = set()
        self.connected_through: set[type[models.Model]] = set()
        self.merged: dict[type[models.Model], _Rule | None] = {}

    def rule_for(self, model: type[models.Model]) -> _Rule | None:
        """Every rule that applies to ``model`` (its own, its concrete model's, its parents')."""
        if not self.settings_loaded:
            self.load_settings()
        try:
            return self.merged[model]  # looked up on every save: keep it a dict read
        except KeyError:
            pass
        with self.lock:  # a concurrent rewire() must not see a rule merged from old sources
            found: _Rule | None = None
            for candidate in _lineage(model):
                for source in (self.from_settings, self.python):
                    rule = source.get(candidate)
                    if rule is not None:
                        found = (found or _Rule(model)).merged(rule)
            self.merged[model] = found
            return found

    def load_settings(self) -> None:
        with self.lock:
            config = toolkit_settings.INVALIDATION
            rules: dict[type[models.Model], _Rule] = {}
            for label, spec in config.items():
                where = f"{SETTING_NAME}['INVALIDATION'][{label!r}]"
                try:
                    model = apps.get_model(label)
                except (LookupError, ValueError) as exc:
                    raise ImproperlyConfigured(f"{where}: no installed model {label!r}") from exc
                rule = rules.setdefault(model, _Rule(model))
                rule.add_templates(spec.get("namespaces", []), spec.get("keys", []), where)
            self.from_settings = rules
            self.settings_loaded = True
            self.rewire()

    def rewire(self) -> None:
        """Connect receivers for every model with rules; disconnect the others."""
        with self.lock:
            wanted: set[type[models.Model]] = set()
            for model in {*self.from_settings, *self.python}:
                wanted |= _descendants(model)
            through: set[type[models.Model]] = set()
            for model in wanted:
                through |= _m2m_through_models(model)
            for model in wanted - self.connected:
                _connect(model)
            for model in self.connected - wanted:
                _disconnect(model)
            for model in through - self.connected_through:
                m2m_changed.connect(_on_m2m_changed, sender=model, dispatch_uid=_uid("m2m", model))
            for model in self.connected_through - through:
                m2m_changed.disconnect(sender=model, dispatch_uid=_uid("m2m", model))
            self.connected = wanted
            self.connected_through = through
            self.merged = {}


_registry = _Registry()


def _lineage(model: type[models.Model]) -> list[type[models.Model]]:
    """The model, its concrete model (for proxies) and its parents: rules of each apply."""
    out = [model]
    concrete = model._meta.concrete_model
    if concrete is not None and concrete not in out:
        out.append(concrete)
    for parent in model._meta.get_parent_list():
        if parent not in out:
            out.append(parent)
    return out


def _descendants(model: type[models.Model]) -> set[type[models.Model]]:
    """The model and every installed proxy or child of it (signals name the exact class)."""
    found = {model}
    if apps.ready:
        found |= {m for m in apps.get_models() if issubclass(m, model)}
    return found


def _m2m_relation(f: Any) -> Any:
    """The ``ManyToManyRel`` of a many-to-many field seen from either side.

    A forward field holds it as ``remote_field``; the reverse side *is* one.
    Decided by type, not by ``Field.concrete``, whose value for a
    ``ManyToManyField`` changed in Django 6.0 (``False`` there, ``True`` before).
    """
    return f if isinstance(f, models.ForeignObjectRel) else f.remote_field


def _m2m_through_models(model: type[models.Model]) -> set[type[models.Model]]:
    through: set[type[models.Model]] = set()
    for f in model._meta.get_fields(include_hidden=True):
        if f.many_to_many:
            candidate = getattr(_m2m_relation(f), "through", None)
            if isinstance(candidate, type):
                through.add(candidate)
    return through


def _uid(kind: str, model: type[models.Model]) -> str:
    return f"drf_redis_toolkit.invalidation.{kind}.{model._meta.label}"


def _connect(model: type[models.Model]) -> None:
    pre_save.connect(_on_pre_save, sender=model, dispatch_uid=_uid("pre_save", model))
    post_save.connect(_on_post_save, sender=model, dispatch_uid=_uid("post_save", model))
    post_delete.connect(_on_post_delete, sender=model, dispatch_uid=_uid("post_delete", model))


def _disconnect(model: type[models.Model]) -> None:
    pre_save.disconnect(sender=model, dispatch_uid=_uid("pre_save", model))
    post_save.disconnect(sender=model, dispatch_uid=_uid("post_save", model))
    post_delete.disconnect(sender=model, dispatch_uid=_uid("post_delete", model))


def _resolve(model: ModelRef) -> type[models.Model]:
    if isinstance(model, str):
        try:
            return apps.get_model(model)
        except (LookupError, ValueError) as exc:
            raise ImproperlyConfigured(f"no installed model {model!r}") from exc
    if isinstance(model, type) and issubclass(model, models.Model):
        return model
    raise TypeError(f"expected a model class or 'app_label.Model', got {model!r}")


def register(
    model: ModelRef,
    namespaces: Iterable[str | NameFunction] = (),
    keys: Iterable[str | NameFunction] = (),
) -> None:
    """Invalidate more names when ``model`` changes, on top of the ``INVALIDATION`` setting.

    Items are templates over the instance's fields (``"cart:user:{user_id}"``)
    or functions ``fn(instances) -> names``, called with a list of changed
    instances (one for a save, many for ``bulk_update``): query for all of them
    at once. Functions run inside the writing transaction, before the commit,
    on the instance as saved and on its previous state.
    """
    resolved = _resolve(model)
    with _registry.lock:
        rule = _registry.python.setdefault(resolved, _Rule(resolved))
        rule.add_templates(list(namespaces), list(keys), f"register({resolved._meta.label})")
        if apps.ready:
            _registry.rewire()


def invalidates(model: ModelRef, *, keys: bool = False) -> Callable[[F], F]:
    """Decorator form of ``register``: the function's names are namespaces (or ``keys=True``)."""

    def decorator(function: F) -> F:
        if keys:
            register(model, keys=[function])
        else:
            register(model, namespaces=[function])
        return function

    return decorator


def unregister(model: ModelRef) -> None:
    """Drop the rules registered from Python for ``model`` (the setting's rules stay)."""
    resolved = _resolve(model)
    with _registry.lock:
        _registry.python.pop(resolved, None)
        if apps.ready:
            _registry.rewire()


def names_for(instances: models.Model | Sequence[models.Model]) -> Names:
    """The names the registered rules give for ``instances`` as they are now."""
    items = [instances] if isinstance(instances, models.Model) else list(instances)
    out = EMPTY
    by_model: dict[type[models.Model], list[models.Model]] = {}
    for obj in items:
        by_model.setdefault(type(obj), []).append(obj)
    for model, objs in by_model.items():
        rule = _registry.rule_for(model)
        if rule is not None:
            out = out | rule.names(objs)
    return out


def setup() -> None:
    """Read the ``INVALIDATION`` setting and connect the receivers (``AppConfig.ready()``)."""
    _registry.load_settings()


def _on_settings_change(changed: set[str]) -> None:
    if "INVALIDATION" in changed and apps.ready:
        try:
            _registry.load_settings()
        except ImproperlyConfigured:
            _registry.settings_loaded = False  # raise again where the next save can see it


toolkit_settings.on_change(_on_settings_change)


# -- delivery ---------------------------------------------------------------------


@dataclass
class _Batch:
    """Names collected for delivery at one commit, grouped by database and sender."""

    by_alias: dict[str, dict[Any, Names]] = field(default_factory=dict)

    def add(self, alias: str, sender: Any, names: Names) -> None:
        senders = self.by_alias.setdefault(alias, {})
        senders[sender] = senders.get(sender, EMPTY) | names

    def merge(self, other: _Batch) -> None:
        for alias, senders in other.by_alias.items():
            for sender, names in senders.items():
                self.add(alias, sender, names)

    def schedule(self) -> None:
        for alias, senders in self.by_alias.items():
            transaction.on_commit(partial(_deliver, dict(senders)), using=alias, robust=True)


_local = threading.local()


def _batches() -> list[_Batch]:
    stack = getattr(_local, "batches", None)
    if stack is None:
        stack = _local.batches = []
    return stack


@contextmanager
def batch() -> Iterator[None]:
    """Collect every invalidation made inside the block into one Redis call.

    On leaving the block, what was collected is scheduled with
    ``transaction.on_commit`` (so a rollback of the enclosing transaction still
    cancels it). Leaving with an exception schedules it too: writes that were
    already committed must not keep stale entries alive.
    """
    stack = _batches()
    current = _Batch()
    stack.append(current)
    try:
        yield
    finally:
        stack.pop()
        if stack:
            stack[-1].merge(current)
        else:
            current.schedule()


def invalidate(
    namespaces: Iterable[str] = (),
    keys: Iterable[str] = (),
    *,
    using: str | None = None,
    sender: Any = None,
) -> None:
    """Invalidate names when the current transaction on ``using`` commits (at once if none)."""
    names = Names(frozenset(namespaces), frozenset(keys))
    if names:
        _schedule(names, using or DEFAULT_DB_ALIAS, sender)


def invalidate_now(
    namespaces: Iterable[str] = (), keys: Iterable[str] = (), *, sender: Any = None
) -> bool:
    """Invalidate at once, ignoring transactions; ``False`` if Redis was unreachable (queued)."""
    return _deliver({sender: Names(frozenset(namespaces), frozenset(keys))})


def _schedule(names: Names, alias: str, sender: Any) -> None:
    stack = _batches()
    if stack:
        stack[-1].add(alias, sender, names)
    else:
        transaction.on_commit(partial(_deliver, {sender: names}), using=alias, robust=True)


def _deliver(by_sender: dict[Any, Names]) -> bool:
    """Bump and delete now; on a Redis failure, log and keep the names for a retry."""
    wanted = EMPTY
    for names in by_sender.values():
        wanted = wanted | names
    if not wanted:
        return True
    backlog = _pending.take()
    try:
        _apply(wanted | backlog.names, backlog.overflowed)
        _pending.settle(backlog)
    except (RedisUnavailable, redis.RedisError) as exc:
        _pending.put(backlog)
        _pending.add(wanted)
        logger.error(
            "drf_redis_toolkit: could not invalidate %d namespace(s) and %d key(s) (%s); kept "
            "for a retry when Redis answers (%d name(s) pending)",
            len(wanted.namespaces),
            len(wanted.keys),
            exc,
            _pending.size(),
        )
        return False
    for sender, names in by_sender.items():
        cache_invalidated.send(sender=sender, namespaces=names.namespaces, keys=names.keys)
    return True


def _apply(names: Names, everything: bool) -> None:
    from drf_redis_toolkit.client import redis_client
    from drf_redis_toolkit.generations import bump_generations

    if everything:
        _invalidate_everything()
    if names.namespaces or names.keys:
        bump_generations(*sorted(names.namespaces | names.keys))
    if names.keys:
        redis_client.delete(*sorted(names.keys))


def _invalidate_everything() -> None:
    """Forget every namespace generation, and every key a ``keys`` template can produce.

    A generation created afresh starts at the server clock, above any value it
    ever had, so every cached response becomes unreachable.
    """
    from drf_redis_toolkit.client import redis_client
    from drf_redis_toolkit.connection import guarded

    with guarded() as client:
        batch_: list[Any] = []
        for name in client.scan_iter(match=keyspace.generation_pattern(), count=500):
            batch_.append(name)
            if len(batch_) >= 500:
                client.unlink(*batch_)
                batch_ = []
        if batch_:
            client.unlink(*batch_)
    for rule in [*_registry.from_settings.values(), *_registry.python.values()]:
        for template in rule.keys:
            redis_client.clear_pattern(_template_glob(template))
    logger.warning("drf_redis_toolkit: dropped every cache generation after a lost invalidation")


def _template_glob(template: str) -> str:
    parts = []
    for literal, name, _, _ in _FORMATTER.parse(template):
        parts.append(keyspace.escape_glob(literal))
        if name is not None:
            parts.append("*")
    return "".join(parts)


@dataclass
class _Backlog:
    names: Names = EMPTY
    overflowed: bool = False


class _Pending:
    """Invalidations Redis did not receive: bounded, retried in a background thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.backlog = _Backlog()
        # Taken for delivery but not delivered yet: still pending for anyone asking.
        self.in_flight: list[_Backlog] = []
        self.thread: threading.Thread | None = None

    def size(self) -> int:
        names = self.backlog.names
        return len(names.namespaces) + len(names.keys)

    def take(self) -> _Backlog:
        """Take the backlog for a delivery; ``settle()`` or ``put()`` it back afterwards."""
        with self.lock:
            backlog, self.backlog = self.backlog, _Backlog()
            self.in_flight.append(backlog)
        return backlog

    def settle(self, backlog: _Backlog) -> None:
        """The delivery of ``backlog`` succeeded."""
        with self.lock:
            self._forget(backlog)

    def _forget(self, backlog: _Backlog) -> None:
        for index, item in enumerate(self.in_flight):
            if item is backlog:
                del self.in_flight[index]
                return

    def snapshot(self) -> _Backlog:
        """Everything not delivered yet: the backlog and what is being delivered."""
        with self.lock:
            names, overflowed = self.backlog.names, self.backlog.overflowed
            for item in self.in_flight:
                names, overflowed = names | item.names, overflowed or item.overflowed
        return _Backlog(names, overflowed)

    def put(self, backlog: _Backlog) -> None:
        """The delivery of ``backlog`` failed: keep it for the next retry."""
        with self.lock:
            self._forget(backlog)
            self.backlog = _Backlog(
                self.backlog.names | backlog.names, self.backlog.overflowed or backlog.overflowed
            )
            self._bound()
            if not self.empty():
                self._start()

    def add(self, names: Names) -> None:
        with self.lock:
            self.backlog = _Backlog(self.backlog.names | names, self.backlog.overflowed)
            self._bound()
            self._start()

    def _bound(self) -> None:
        if self.size() > MAX_PENDING:
            if not self.backlog.overflowed:
                logger.critical(
                    "drf_redis_toolkit: more than %d invalidations pending; every cached "
                    "generation will be dropped when Redis answers",
                    MAX_PENDING,
                )
            self.backlog = _Backlog(EMPTY, True)

    def _start(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(
                target=self._retry_loop, name="drf-redis-toolkit-invalidation-retry", daemon=True
            )
            self.thread.start()

    def _retry_loop(self) -> None:
        delay = _RETRY_FIRST_DELAY
        for _ in range(_RETRY_MAX_ATTEMPTS):
            time.sleep(delay)
            with self.lock:
                if self.empty():
                    self.thread = None  # under the lock: a later add() starts a new thread
                    return
            delivered = retry_pending()
            delay = _RETRY_FIRST_DELAY if delivered else min(delay * 2, _RETRY_MAX_DELAY)
        with self.lock:
            self.thread = None

    def empty(self) -> bool:
        return not self.backlog.names and not self.backlog.overflowed

    def clear(self) -> None:
        with self.lock:
            self.backlog = _Backlog()
            self.in_flight = []


_pending = _Pending()
os.register_at_fork(after_in_child=_pending.clear)  # the parent still owns its backlog


def retry_pending() -> bool:
    """Deliver the invalidations kept after a Redis failure; ``True`` if none remain."""
    backlog = _pending.take()
    if not backlog.names and not backlog.overflowed:
        _pending.settle(backlog)
        return True
    try:
        _apply(backlog.names, backlog.overflowed)
    except (RedisUnavailable, redis.RedisError):
        _pending.put(backlog)
        return False
    _pending.settle(backlog)
    logger.warning(
        "drf_redis_toolkit: delivered %d invalidation(s) kept during a Redis outage",
        len(backlog.names.namespaces) + len(backlog.names.keys),
    )
    return True


def pending_invalidations() -> dict[str, Any]:
    """What waits for Redis: ``{"namespaces": [...], "keys": [...], "overflowed": bool}``.

    Includes what a delivery is sending right now: empty means delivered.
    """
    backlog = _pending.snapshot()
    return {
        "namespaces": sorted(backlog.names.namespaces),
        "keys": sorted(backlog.names.keys),
        "overflowed": backlog.overflowed,
    }


# -- signal receivers ----------------------------------------------------------------


def _rows_in_db(
    rule: _Rule, model: type[models.Model], pks: Iterable[Any], alias: str
) -> list[models.Model]:
    """The rows as they are in the database now: what the rule reads, 500 rows a query."""
    pk_list = [pk for pk in pks if pk is not None]
    if not pk_list or not rule.needs_old_state:
        return []
    queryset = model._base_manager.using(alias)
    if not rule.functions:
        queryset = queryset.only(*rule.tracked_fields)
    rows: list[models.Model] = []
    for start in range(0, len(pk_list), _PK_CHUNK):
        rows.extend(queryset.filter(pk__in=pk_list[start : start + _PK_CHUNK]))
    return rows


def _on_pre_save(
    sender: type[models.Model],
    instance: models.Model,
    using: str,
    update_fields: Iterable[str] | None = None,
    **kwargs: Any,
) -> None:
    instance.__dict__.pop(_OLD_ROW_ATTR, None)
    rule = _registry.rule_for(sender)
    if rule is None or instance.pk is None or not rule.needs_old_state:
        return
    if update_fields is not None and not rule.functions:
        attnames = {getattr(sender._meta.get_field(n), "attname", n) for n in update_fields}
        if not attnames & rule.tracked_fields:
            return  # the fields the templates read are not being written
    # The row before it is overwritten: its names (a category the product is
    # leaving) are invalidated with the new ones, computed together in post_save.
    instance.__dict__[_OLD_ROW_ATTR] = _rows_in_db(rule, sender, [instance.pk], using)


def _on_post_save(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    old = instance.__dict__.pop(_OLD_ROW_ATTR, [])
    rule = _registry.rule_for(sender)
    if rule is not None:
        _schedule(rule.names([*old, instance]), using, sender)


def _on_post_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    rule = _registry.rule_for(sender)
    if rule is not None:
        _schedule(rule.names([instance]), using, sender)


def _m2m_field_names(
    through: type[models.Model], instance: models.Model, model: type[models.Model], reverse: bool
) -> tuple[str, str] | None:
    """``(instance side, other side)`` names of the through model's foreign keys."""
    owner = model if reverse else type(instance)
    f: Any
    for f in owner._meta.get_fields():
        if (
            f.many_to_many
            and not isinstance(f, models.ForeignObjectRel)  # the forward field
            and getattr(f.remote_field, "through", None) is through
        ):
            if reverse:
                return f.m2m_reverse_field_name(), f.m2m_field_name()
            return f.m2m_field_name(), f.m2m_reverse_field_name()
    return None


def _on_m2m_changed(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    reverse: bool,
    model: type[models.Model],
    pk_set: set[Any] | None,
    using: str,
    **kwargs: Any,
) -> None:
    other_rule = _registry.rule_for(model)
    if action == "pre_clear":
        # post_clear gives no pk_set: note who was related before the rows go.
        if other_rule is not None:
            sides = _m2m_field_names(sender, instance, model, reverse)
            if sides is not None:
                mine, theirs = sides
                pks = set(
                    sender._base_manager.using(using)
                    .filter(**{mine: instance.pk})
                    .values_list(theirs, flat=True)
                )
                instance.__dict__[_CLEARED_PKS_ATTR] = pks
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if action == "post_clear":
        pk_set = instance.__dict__.pop(_CLEARED_PKS_ATTR, None)
    names = EMPTY
    rule = _registry.rule_for(type(instance))
    if rule is not None:
        names = names | rule.names([instance])
    if other_rule is not None and pk_set:
        if other_rule.needs_old_state:
            others = _rows_in_db(other_rule, model, pk_set, using)
        else:
            others = [model(pk=pk) for pk in pk_set]  # the rules read only the pk: no query
        names = names | other_rule.names(others)
    if names:
        _schedule(names, using, type(instance))


# -- writes that send no signals ---------------------------------------------------------


class InvalidatingQuerySet(models.QuerySet):
    """A QuerySet whose signal-less writes invalidate like a ``save()`` would.

    ``update()``, ``bulk_create()`` and ``bulk_update()`` compute the names of
    the rows before and after the write (an extra ``SELECT`` each side for
    ``update()``) and invalidate them at the commit. ``delete()`` needs nothing
    extra: Django sends ``post_delete`` per row whenever receivers exist.
    Raw SQL and ``_raw_delete()`` remain uncovered.
    """

    def _rule(self) -> _Rule | None:
        return _registry.rule_for(self.model)

    def update(self, **kwargs: Any) -> int:
        rule = self._rule()
        if rule is None:
            return super().update(**kwargs)
        alias = self._write_alias()
        with transaction.atomic(using=alias, savepoint=False):
            matched = self.using(alias)
            if matched._fields is not None:  # type: ignore[attr-defined]  # .values().update()
                matched = self.model._base_manager.using(alias).filter(pk__in=matched.values("pk"))
            before = list(matched if rule.functions else matched.only(*rule.tracked_fields))
            count = super().update(**kwargs)
            # The update may have moved rows to other names: read them again.
            after = _rows_in_db(rule, self.model, [obj.pk for obj in before], alias)
            _schedule(rule.names([*before, *after]), alias, self.model)
        return count

    def _write_alias(self) -> str:
        chosen: str | None = self._db  # type: ignore[attr-defined]
        hints = self._hints  # type: ignore[attr-defined]
        return chosen or router.db_for_write(self.model, **hints)

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> Any:
        rule = self._rule()
        if rule is None:
            return super().bulk_create(objs, *args, **kwargs)
        objs = list(objs)
        alias = self._write_alias()
        old: list[models.Model] = []
        unique_fields = kwargs.get("unique_fields")
        with transaction.atomic(using=alias, savepoint=False):
            if kwargs.get("update_conflicts") and unique_fields and rule.needs_old_state:
                old = self._conflicting_rows(objs, list(unique_fields), alias)
            created = super().bulk_create(objs, *args, **kwargs)
            _schedule(rule.names([*old, *created]), alias, self.model)
        return created

    def _conflicting_rows(
        self, objs: list[models.Model], unique_fields: list[str], alias: str
    ) -> list[models.Model]:
        """The rows an upsert is about to overwrite, as they are now."""
        attnames = [self.model._meta.get_field(name).attname for name in unique_fields]
        rows: list[models.Model] = []
        for start in range(0, len(objs), _PK_CHUNK):
            condition = models.Q()
            for obj in objs[start : start + _PK_CHUNK]:
                condition |= models.Q(**{a: getattr(obj, a) for a in attnames})
            rows.extend(self.model._base_manager.using(alias).filter(condition))
        return rows

    def bulk_update(
        self, objs: Iterable[Any], fields: Iterable[str], batch_size: int | None = None
    ) -> int:
        rule = self._rule()
        if rule is None:
            return super().bulk_update(objs, fields, batch_size=batch_size)
        objs = list(objs)
        alias = self._write_alias()
        with transaction.atomic(using=alias, savepoint=False):
            old = _rows_in_db(rule, self.model, [obj.pk for obj in objs], alias)
            count = super().bulk_update(objs, fields, batch_size=batch_size)
            _schedule(rule.names([*old, *objs]), alias, self.model)
        return count


class InvalidatingManager(models.Manager.from_queryset(InvalidatingQuerySet)):  # type: ignore[misc]
    """``objects = InvalidatingManager()``: the opt-in manager over ``InvalidatingQuerySet``."""
