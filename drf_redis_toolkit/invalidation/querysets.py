"""Writes that send no signals: ``update()``, ``bulk_create()``, ``bulk_update()``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models, router, transaction

from drf_redis_toolkit.invalidation.delivery import schedule
from drf_redis_toolkit.invalidation.rules import PK_CHUNK, _registry, _Rule, rows_in_db


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
            after = rows_in_db(rule, self.model, [obj.pk for obj in before], alias)
            schedule(rule.names([*before, *after]), alias, self.model)
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
            schedule(rule.names([*old, *created]), alias, self.model)
        return created

    def _conflicting_rows(
        self, objs: list[models.Model], unique_fields: list[str], alias: str
    ) -> list[models.Model]:
        """The rows an upsert is about to overwrite, as they are now."""
        attnames = [self.model._meta.get_field(name).attname for name in unique_fields]
        rows: list[models.Model] = []
        for start in range(0, len(objs), PK_CHUNK):
            condition = models.Q()
            for obj in objs[start : start + PK_CHUNK]:
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
            old = rows_in_db(rule, self.model, [obj.pk for obj in objs], alias)
            count = super().bulk_update(objs, fields, batch_size=batch_size)
            schedule(rule.names([*old, *objs]), alias, self.model)
        return count


class InvalidatingManager(models.Manager.from_queryset(InvalidatingQuerySet)):  # type: ignore[misc]
    """``objects = InvalidatingManager()``: the opt-in manager over ``InvalidatingQuerySet``."""
