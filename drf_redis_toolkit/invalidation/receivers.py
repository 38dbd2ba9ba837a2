"""Signal receivers: turn saves, deletes and m2m changes into scheduled invalidations.

They are connected per registered model (never globally, which would disable
Django's fast deletes for every model). When a foreign key changes, the names
of both the old and the new value are invalidated: ``pre_save`` reads the row as
it is in the database before it is overwritten. A delete drops the object's m2m
rows without any ``m2m_changed``: ``pre_delete`` reads, while they still exist,
the related objects whose model has rules (a tag's products), on either side of
the relation, so the models at the other end of a registered model's m2m fields
get delete receivers too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from drf_redis_toolkit.invalidation.delivery import schedule
from drf_redis_toolkit.invalidation.rules import EMPTY, Names, _m2m_relation, _registry, rows_in_db

_OLD_ROW_ATTR = "_drt_invalidation_old_row"
_CLEARED_PKS_ATTR = "_drt_invalidation_cleared_pks"
_DELETED_NAMES_ATTR = "_drt_invalidation_deleted_names"


def _uid(kind: str, model: type[models.Model]) -> str:
    return f"drf_redis_toolkit.invalidation.{kind}.{model._meta.label}"


def connect(model: type[models.Model]) -> None:
    pre_save.connect(_on_pre_save, sender=model, dispatch_uid=_uid("pre_save", model))
    post_save.connect(_on_post_save, sender=model, dispatch_uid=_uid("post_save", model))


def connect_deletes(model: type[models.Model]) -> None:
    """Receivers for deleting ``model``: a model with rules, or one m2m-related to one."""
    pre_delete.connect(_on_pre_delete, sender=model, dispatch_uid=_uid("pre_delete", model))
    post_delete.connect(_on_post_delete, sender=model, dispatch_uid=_uid("post_delete", model))


def disconnect_deletes(model: type[models.Model]) -> None:
    pre_delete.disconnect(sender=model, dispatch_uid=_uid("pre_delete", model))
    post_delete.disconnect(sender=model, dispatch_uid=_uid("post_delete", model))


def connect_through(through: type[models.Model]) -> None:
    m2m_changed.connect(_on_m2m_changed, sender=through, dispatch_uid=_uid("m2m", through))


def disconnect_through(through: type[models.Model]) -> None:
    m2m_changed.disconnect(sender=through, dispatch_uid=_uid("m2m", through))


def disconnect(model: type[models.Model]) -> None:
    pre_save.disconnect(sender=model, dispatch_uid=_uid("pre_save", model))
    post_save.disconnect(sender=model, dispatch_uid=_uid("post_save", model))


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
    instance.__dict__[_OLD_ROW_ATTR] = rows_in_db(rule, sender, [instance.pk], using)


def _on_post_save(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    old = instance.__dict__.pop(_OLD_ROW_ATTR, [])
    rule = _registry.rule_for(sender)
    if rule is not None:
        schedule(rule.names([*old, instance]), using, sender)


def _on_pre_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    """Names that need the rows the delete is about to drop: the rule's functions
    (which may read the m2m rows) and the rules of the objects related by m2m."""
    names = EMPTY
    rule = _registry.rule_for(sender)
    if rule is not None and rule.functions:
        names = rule.names([instance])
    for field in sender._meta.get_fields(include_hidden=True):
        other = field.related_model if field.many_to_many else None
        if not isinstance(other, type) or _registry.rule_for(other) is None:
            continue
        through = getattr(_m2m_relation(field), "through", None)
        reverse = isinstance(field, models.ForeignObjectRel)
        if isinstance(through, type):
            names = names | _related_names(through, instance, other, reverse, None, using)
    instance.__dict__[_DELETED_NAMES_ATTR] = names


def _on_post_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    names = instance.__dict__.pop(_DELETED_NAMES_ATTR, EMPTY)
    rule = _registry.rule_for(sender)
    if rule is not None:
        names = names | rule.names([instance])
    if names:
        schedule(names, using, sender)


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
    if action == "pre_clear":
        # post_clear gives no pk_set: note who was related before the rows go.
        if _registry.rule_for(model) is not None:
            pks = _related_pks(sender, instance, model, reverse, using)
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
    if pk_set:
        names = names | _related_names(sender, instance, model, reverse, pk_set, using)
    if names:
        schedule(names, using, type(instance))


def _related_pks(
    through: type[models.Model],
    instance: models.Model,
    model: type[models.Model],
    reverse: bool,
    using: str,
) -> set[Any]:
    """The pks of the ``model`` objects related to ``instance`` through ``through`` now."""
    sides = _m2m_field_names(through, instance, model, reverse)
    if sides is None:
        return set()
    mine, theirs = sides
    return set(
        through._base_manager.using(using)
        .filter(**{mine: instance.pk})
        .values_list(theirs, flat=True)
    )


def _related_names(
    through: type[models.Model],
    instance: models.Model,
    model: type[models.Model],
    reverse: bool,
    pk_set: set[Any] | None,
    using: str,
) -> Names:
    """The names ``model``'s rules give its objects in ``pk_set`` (``None``: those related
    to ``instance`` now, read from ``through``)."""
    other_rule = _registry.rule_for(model)
    if other_rule is None:
        return EMPTY
    if pk_set is None:
        pk_set = _related_pks(through, instance, model, reverse, using)
    if not pk_set:
        return EMPTY
    if other_rule.needs_old_state:
        others = rows_in_db(other_rule, model, pk_set, using)
    else:
        others = [model(pk=pk) for pk in pk_set]  # the rules read only the pk: no query
    return other_rule.names(others)
