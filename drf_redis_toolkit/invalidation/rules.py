"""Invalidation rules: which names a model instance's cached data lives under.

Rules come from the ``INVALIDATION`` setting and from Python (``register()``,
``@invalidates``), merged per model with those of its concrete model and
parents. Templates use the instance's fields (``{pk}``, ``{category_id}``); a
template whose field is ``None`` is skipped. Changing the rules rewires the
signal receivers (``receivers``) for exactly the models that have rules.
"""

from __future__ import annotations

import string
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, TypeVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.conf import SETTING_NAME, toolkit_settings

#: A function giving extra names for changed instances (always given a list).
NameFunction = Callable[[Sequence[Any]], Iterable[str] | None]
ModelRef = type[models.Model] | str
F = TypeVar("F", bound=NameFunction)

PK_CHUNK = 500
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
        self.connected_deletes: set[type[models.Model]] = set()
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
            deleted = set(wanted)  # deleting these can change a rule's names
            for model in wanted:
                through |= _m2m_through_models(model)
                deleted |= _m2m_partners(model)
            from drf_redis_toolkit.invalidation import receivers

            for model in wanted - self.connected:
                receivers.connect(model)
            for model in self.connected - wanted:
                receivers.disconnect(model)
            for model in deleted - self.connected_deletes:
                receivers.connect_deletes(model)
            for model in self.connected_deletes - deleted:
                receivers.disconnect_deletes(model)
            for model in through - self.connected_through:
                receivers.connect_through(model)
            for model in self.connected_through - through:
                receivers.disconnect_through(model)
            self.connected = wanted
            self.connected_deletes = deleted
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
    if apps.models_ready:
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


def _m2m_partners(model: type[models.Model]) -> set[type[models.Model]]:
    """The models at the other end of ``model``'s m2m relations (and their proxies, children).

    Deleting one of them drops its m2m rows without an ``m2m_changed``: its
    delete receivers invalidate the ``model`` objects it was related to.
    """
    partners: set[type[models.Model]] = set()
    for f in model._meta.get_fields(include_hidden=True):
        if f.many_to_many and isinstance(f.related_model, type):
            partners |= _descendants(f.related_model)
    return partners


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
    # Checked apart first: a refused call must leave none of its templates behind.
    # Not list()ed first: a string ("menu") must be refused, not read as "m", "e", ...
    added = _Rule(resolved)
    added.add_templates(namespaces, keys, f"register({resolved._meta.label})")
    with _registry.lock:
        rule = _registry.python.get(resolved)
        _registry.python[resolved] = added if rule is None else rule.merged(added)
        if apps.models_ready:  # from an AppConfig.ready() too: the setup() before it is done
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
        if apps.models_ready:
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


def rows_in_db(
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
    for start in range(0, len(pk_list), PK_CHUNK):
        rows.extend(queryset.filter(pk__in=pk_list[start : start + PK_CHUNK]))
    return rows


def template_glob(template: str) -> str:
    parts = []
    for literal, name, _, _ in _FORMATTER.parse(template):
        parts.append(keyspace.escape_glob(literal))
        if name is not None:
            parts.append("*")
    return "".join(parts)
