"""Invalidation follows the transaction of the database the write was made on.

A project with several databases writes to one of them in a transaction of its
own: the names are delivered when *that* transaction commits, and not at all if
it rolls back, whatever the default database is doing. ``second_database``
(tests/sample_fixtures.py) adds a SQLite database for the test; the test runs
with real commits on both.
"""

from __future__ import annotations

import pytest
from catalog.models import Category
from django.db import transaction

from drf_redis_toolkit import invalidation
from tests.sample_fixtures import Generations

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


def test_invalidate_on_another_database_waits_for_that_commit(shop, second_database):
    gens = Generations(["multi:ns"])
    with transaction.atomic(using=second_database):
        invalidation.invalidate("multi:ns", using=second_database)
        assert gens.bumped() == set()  # the default database has no transaction open
    assert gens.bumped() == {"multi:ns"}


def test_a_rollback_on_another_database_invalidates_nothing(shop, second_database):
    gens = Generations(["multi:ns"])
    with pytest.raises(Rollback), transaction.atomic(using=second_database):
        invalidation.invalidate("multi:ns", using=second_database)
        raise Rollback
    assert gens.bumped() == set()


def test_a_model_saved_on_another_database_is_invalidated_at_its_commit(shop, second_database):
    gens = Generations(["categories:all"])
    with transaction.atomic(using=second_database):
        Category.objects.using(second_database).create(name="Books", slug="books")
        assert gens.bumped() == set()
    assert gens.bumped() == {"categories:all"}
    gens.snapshot()
    with pytest.raises(Rollback), transaction.atomic(using=second_database):
        Category.objects.using(second_database).create(name="Games", slug="games")
        raise Rollback
    assert gens.bumped() == set()  # the rolled-back save delivered nothing
