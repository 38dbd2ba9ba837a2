"""Signal receivers: turn saves, deletes and m2m changes into scheduled invalidations.

They are connected per registered model (never globally, which would disable
Django's fast deletes for every model). When a foreign key changes, the names
of both the old and the new value are invalidated: ``pre_save`` reads the row as
it is in the database before it is overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from drf_redis_toolkit.invalidation.delivery import schedule
from drf_redis_toolkit.invalidation.rules import EMPTY, _registry, rows_in_db

_OLD_ROW_ATTR = "_drt_invalidation_old_row"
_CLEARED_PKS_ATTR = "_drt_invalidation_cleared_pks"


def _uid(kind: str, model: type[models.Model]) -> str:
    return f"drf_redis_toolkit.invalidation.{kind}.{model._meta.label}"


def connect(model: type[models.Model]) -> None:
    pre_save.connect(_on_pre_save, sender=model, dispatch_uid=_uid("pre_save", model))
    post_save.connect(_on_post_save, sender=model, dispatch_uid=_uid("post_save", model))
    post_delete.connect(_on_post_delete, sender=model, dispatch_uid=_uid("post_delete", model))


def connect_through(through: type[models.Model]) -> None:
    m2m_changed.connect(_on_m2m_changed, sender=through, dispatch_uid=_uid("m2m", through))


def disconnect_through(through: type[models.Model]) -> None:
    m2m_changed.disconnect(sender=through, dispatch_uid=_uid("m2m", through))


def disconnect(model: type[models.Model]) -> None:
    pre_save.disconnect(sender=model, dispatch_uid=_uid("pre_save", model))
    post_save.disconnect(sender=model, dispatch_uid=_uid("post_save", model))
    post_delete.disconnect(sender=model, dispatch_uid=_uid("post_delete", model))


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


def _on_post_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    rule = _registry.rule_for(sender)
    if rule is not None:
        schedule(rule.names([instance]), using, sender)


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
            others = rows_in_db(other_rule, model, pk_set, using)
        else:
            others = [model(pk=pk) for pk in pk_set]  # the rules read only the pk: no query
        names = names | other_rule.names(others)
    if names:
        schedule(names, using, type(instance))
