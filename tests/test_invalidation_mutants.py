"""Behaviour of invalidation/ (and of cache_entries.py's body store) that mutation testing
found unpinned (docs/testing.md, "Scores").

mutmut switches a mutant on in a process that has already imported every module:
a decorator applied at import time, or a module-level instance, never runs the
mutated code. So ``@invalidates`` is applied inside the test, and the process-wide
objects (the body store, the rule registry, the retry record) get a fresh instance.
"""

from __future__ import annotations

import logging
import re
import threading

import pytest
from catalog.models import Category, Product
from django.core.exceptions import ImproperlyConfigured

from drf_redis_toolkit import invalidation
from drf_redis_toolkit.cache_entries import Entry, LocalBodies
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.invalidation import delivery, outbox, rules
from drf_redis_toolkit.invalidation.rules import Names
from tests.sample_fixtures import Generations

pytestmark = pytest.mark.django_db(transaction=True)


# -- rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("as_keys", [False, True])
def test_invalidates_registers_its_function_for_the_model(shop, catalog, as_keys):
    def landing(categories):
        return [f"landing:{c.slug}" for c in categories]

    if as_keys:
        invalidation.invalidates(Category, keys=True)(landing)
    else:
        invalidation.invalidates(Category)(landing)  # namespaces by default

    try:
        category = catalog.categories[0]
        name = f"landing:{category.slug}"
        redis_client.set(name, "cached")
        gens = Generations([name])
        category.name = "Renamed"
        category.save()
        assert gens.bumped() == {name}
        # Only a key is deleted; a namespace is bumped and nothing else.
        assert (redis_client.get(name) is None) is as_keys
    finally:
        invalidation.unregister(Category)


def test_register_resolves_a_label_and_refuses_what_is_no_model(shop):
    invalidation.register("catalog.Category", namespaces=["landing:{slug}"])
    try:
        assert rules._registry.python[Category].namespaces == ["landing:{slug}"]
    finally:
        invalidation.unregister("catalog.Category")
    with pytest.raises(ImproperlyConfigured, match=re.escape("no installed model 'nope.Nope'")):
        invalidation.register("nope.Nope", namespaces=["x"])
    with pytest.raises(TypeError, match=re.escape("expected a model class or 'app_label.Model'")):
        invalidation.register(str, namespaces=["x"])
    with pytest.raises(ImproperlyConfigured, match=re.escape("register(catalog.Category)[")):
        invalidation.register(Category, namespaces=["landing:{no_such_field}"])
    invalidation.unregister(Category)  # nothing registered from Python: nothing to drop


def test_a_refused_register_registers_none_of_its_templates(settings):
    from tests.testapp.models import Gadget

    _setting(settings, {})
    invalidation.register(Category, namespaces=["menu"])
    try:
        with pytest.raises(ImproperlyConfigured, match=re.escape("['no_such_field']")):
            invalidation.register(Category, namespaces=["landing:{slug}", "x:{no_such_field}"])
        assert rules._registry.python[Category].namespaces == ["menu"]
        invalidation.register(Gadget, namespaces=["gadgets"])  # a rewire: the rules in use
        assert rules.names_for(Category(pk=1, slug="books")) == Names(frozenset({"menu"}))
    finally:
        invalidation.unregister(Category)
        invalidation.unregister(Gadget)
    with pytest.raises(ImproperlyConfigured):
        invalidation.register(Category, keys=["y:{no_such_field}"])
    assert Category not in rules._registry.python  # not even an empty rule


def test_a_rule_skips_only_the_instance_whose_field_is_none_and_accepts_one_string():
    rule = rules._Rule(Product)
    rule.add_templates(["category:{category_id}"], [], "test")
    rule.functions.append((lambda products: "landing", False))
    unsaved = Product(pk=None, category_id=None)
    placed = Product(pk=2, category_id=7)
    names = rule.names([unsaved, placed])
    assert names == Names(frozenset({"category:7", "landing"}))


def test_rows_in_db_reads_each_row_once_and_only_when_a_rule_needs_it(shop, catalog):
    first, second = catalog.products[0], catalog.products[1]
    rule = rules._Rule(Product)
    rule.add_templates(["category:{category_id}"], [], "test")
    rows = rules.rows_in_db(rule, Product, [first.pk, second.pk, None], "default")
    assert sorted(r.pk for r in rows) == sorted([first.pk, second.pk])
    assert {r.category_id for r in rows} == {first.category_id, second.category_id}
    pk_only = rules._Rule(Product)
    pk_only.add_templates(["product:{pk}"], [], "test")
    assert rules.rows_in_db(pk_only, Product, [first.pk], "default") == []


def test_rows_in_db_reads_the_database_it_is_given(second_database):
    here = Category.objects.create(name="Books", slug="here")
    Category.objects.using(second_database).create(pk=here.pk, name="Books", slug="there")
    rule = rules._Rule(Category)
    rule.add_templates(["category:{slug}"], [], "test")
    (row,) = rules.rows_in_db(rule, Category, [here.pk], second_database)
    assert row.slug == "there" and row._state.db == "other"


def test_a_fresh_registry_merges_the_rules_of_the_model_and_its_parents():
    registry = rules._Registry()
    registry.settings_loaded = True  # no setting: the rules registered below only
    rule = rules._Rule(Product)
    rule.add_templates(["product:{pk}"], [], "test")
    registry.python[Product] = rule
    found = registry.rule_for(Product)
    assert found is not None and found.namespaces == ["product:{pk}"]
    assert registry.rule_for(Category) is None
    assert registry.merged == {Product: found, Category: None}


def _setting(settings, invalidation_rules):
    settings.DRF_REDIS_TOOLKIT = {**settings.DRF_REDIS_TOOLKIT, "INVALIDATION": invalidation_rules}


def test_the_setting_gives_a_model_its_namespaces_and_its_keys(settings):
    _setting(
        settings,
        {"catalog.Category": {"namespaces": ["categories", "category:{slug}"], "keys": ["c:{pk}"]}},
    )
    assert rules.names_for(Category(pk=3, name="Books", slug="books")) == Names(
        frozenset({"categories", "category:books"}), frozenset({"c:3"})
    )


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"catalog.Nope": {}},
            "DRF_REDIS_TOOLKIT['INVALIDATION']['catalog.Nope']: no installed model 'catalog.Nope'",
        ),
        (
            {"catalog.Category": {"namespaces": ["category:{colour}"]}},
            "DRF_REDIS_TOOLKIT['INVALIDATION']['catalog.Category']['namespaces']: template "
            "'category:{colour}' names ['colour'], which are not fields of catalog.Category; "
            "use 'pk' or one of ['description', 'id', 'name', 'slug']",
        ),
    ],
    ids=["unknown-model", "unknown-field"],
)
def test_a_bad_setting_is_refused_naming_its_entry(settings, entry, message):
    _setting(settings, entry)  # refused when read: at the next save (and at start-up)
    with pytest.raises(ImproperlyConfigured) as refused:
        rules.names_for(Category(pk=1, name="Books", slug="books"))
    assert str(refused.value) == message


def test_unregister_without_python_rules_keeps_the_settings_rules(settings):
    _setting(settings, {"catalog.Category": {"namespaces": ["categories"]}})
    assert Category not in rules._registry.python
    invalidation.unregister(Category)  # nothing registered from Python: nothing to drop
    assert rules.names_for(Category(pk=1)) == Names(frozenset({"categories"}))


@pytest.fixture
def gadget_rules():
    """Rules for ``Gadget`` (a parent) and ``SpecialGadget`` (its multi-table child)."""
    from tests.testapp.models import Gadget, SpecialGadget

    invalidation.register(Gadget, namespaces=["gadget:{pk}"], keys=["gadget-name:{name}"])
    invalidation.register(SpecialGadget, namespaces=["special:{colour}"])
    try:
        yield
    finally:
        invalidation.unregister(Gadget)
        invalidation.unregister(SpecialGadget)


def test_a_childs_names_include_its_parents_rules(gadget_rules):
    from tests.testapp.models import Gadget, GadgetProxy, SpecialGadget, SpecialGadgetProxy

    child = SpecialGadget(pk=4, name="lamp", colour="blue")
    expected = Names(frozenset({"gadget:4", "special:blue"}), frozenset({"gadget-name:lamp"}))
    assert rules.names_for(child) == expected
    # A proxy of the child: its concrete model's rules and the parent's.
    assert rules.names_for(SpecialGadgetProxy(pk=4, name="lamp", colour="blue")) == expected
    parent = Names(frozenset({"gadget:4"}), frozenset({"gadget-name:lamp"}))
    assert rules.names_for(Gadget(pk=4, name="lamp")) == parent
    assert rules.names_for(GadgetProxy(pk=4, name="lamp")) == parent


def test_saving_a_child_invalidates_its_parents_names(gadget_rules, backend):
    from tests.testapp.models import SpecialGadget

    sent = []

    def receiver(sender, namespaces, keys, **kwargs):
        sent.append((namespaces, keys))

    delivery.cache_invalidated.connect(receiver, dispatch_uid="test-child-rules")
    try:
        child = SpecialGadget.objects.create(name="lamp", colour="blue")
    finally:
        delivery.cache_invalidated.disconnect(dispatch_uid="test-child-rules")
    assert sent == [
        (frozenset({f"gadget:{child.pk}", "special:blue"}), frozenset({"gadget-name:lamp"}))
    ]


# -- delivery ------------------------------------------------------------------------------


def test_nested_batches_deliver_once_when_the_outermost_ends(shop, catalog):
    sent = []

    def receiver(sender, namespaces, keys, **kwargs):
        sent.append((sender, namespaces, keys))

    delivery.cache_invalidated.connect(receiver, dispatch_uid="test-nested-batches")
    try:
        with invalidation.batch():
            invalidation.invalidate("outer:1")
            with invalidation.batch():
                invalidation.invalidate("inner:1", keys="inner-key:1")
            assert sent == []  # the inner block handed its names to the outer one
        assert sent == [
            (None, frozenset({"outer:1", "inner:1"}), frozenset({"inner-key:1"})),
        ]
    finally:
        delivery.cache_invalidated.disconnect(dispatch_uid="test-nested-batches")


def test_a_merged_batch_keeps_the_inner_outbox_rows():
    outer, inner = delivery._Batch(), delivery._Batch()
    outer.add("default", None, Names(frozenset({"a"})), ("default", 1))
    inner.add("default", None, Names(frozenset({"b"})), ("default", 2))
    inner.add("other", Product, Names(keys=frozenset({"k"})), ("other", 3))
    outer.merge(inner)
    assert outer.by_alias == {
        "default": {None: Names(frozenset({"a", "b"}))},
        "other": {Product: Names(keys=frozenset({"k"}))},
    }
    assert outer.rows == {"default": {("default", 1), ("default", 2)}, "other": {("other", 3)}}


def test_a_delivery_error_on_an_old_django_is_logged_not_raised(caplog):
    def fails():
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="drf_redis_toolkit.invalidation"):
        delivery._logging_errors(fails)
    (record,) = caplog.records
    assert record.getMessage() == (
        "drf_redis_toolkit: an invalidation delivery failed after the commit"
    )
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_dropping_everything_unlinks_every_generation_and_nothing_else(backend, caplog):
    from drf_redis_toolkit import keys as keyspace
    from drf_redis_toolkit.generations import bump_generations

    names = [f"ns:{i}" for i in range(1201)]  # more than two SCAN batches of 500
    bump_generations(*names)
    redis_client.set("unrelated", "kept")
    with caplog.at_level(logging.WARNING, logger="drf_redis_toolkit.invalidation"):
        delivery._invalidate_everything()
    assert not any(backend.raw.exists(keyspace.generation_key(n)) for n in names[:5])
    assert list(backend.raw.scan_iter(match=keyspace.generation_pattern(), count=1000)) == []
    assert redis_client.get("unrelated") == "kept"
    assert [r.getMessage() for r in caplog.records] == [
        "drf_redis_toolkit: dropped every cache generation after a lost invalidation"
    ]


def test_a_fresh_retry_record_keeps_what_is_in_flight_until_settled():
    pending = delivery._Pending()
    taken = pending.take(Names(frozenset({"a"})), [("default", 1)])
    assert pending.in_flight == [taken]
    assert pending.snapshot().names == Names(frozenset({"a"}))
    pending.settle(taken)
    assert pending.in_flight == [] and pending.empty()


def test_a_forked_worker_polls_the_outbox_at_its_first_request():
    saved = outbox._last_poll[0]
    try:
        outbox._last_poll[0] = 123.0
        outbox._after_fork()
        assert outbox._last_poll == [0.0]
    finally:
        outbox._last_poll[0] = saved


def test_a_missing_outbox_table_is_warned_once_with_the_database_error(caplog, monkeypatch):
    from django.db import DatabaseError

    monkeypatch.setattr(outbox, "_tables", {})
    with caplog.at_level(logging.WARNING, logger="drf_redis_toolkit.invalidation"):
        outbox._missing("elsewhere", DatabaseError("no such table: x"))
        outbox._missing("elsewhere", DatabaseError("no such table: x"))
    (record,) = caplog.records
    assert record.getMessage() == (
        "drf_redis_toolkit: no outbox table in database 'elsewhere' (run migrate?): "
        "invalidations made there during a Redis outage do not survive their process "
        "(no such table: x)"
    )
    assert outbox._tables == {"elsewhere": False}


# -- the per-process body store ---------------------------------------------------------------


def _entry(body: bytes) -> Entry:
    return Entry('"etag"', b"{}", 200, {}, True, body)


def test_a_fresh_body_store_counts_bytes_exactly_through_discards():
    big, small, third = _entry(b"x" * 1000), _entry(b"y" * 100), _entry(b"z" * 500)
    store = LocalBodies(max_bytes=big.size + small.size)  # exactly two fit
    store.put("big", big)
    store.put("small", small)
    assert store.get("big") is big and store.get("small") is small
    store.discard("absent")  # nothing to forget
    store.discard("big")
    assert store.get("big") is None
    store.put("third", third)  # fits beside "small" once "big"'s bytes were given back
    assert store.get("small") is small and store.get("third") is third


def test_a_forked_worker_gets_an_unlocked_body_store_lock():
    from drf_redis_toolkit import cache_entries

    held = threading.Lock()
    held.acquire()
    saved = cache_entries.local_bodies._lock
    cache_entries.local_bodies._lock = held  # another thread of the parent held it
    try:
        cache_entries._after_fork_in_child()
        lock = cache_entries.local_bodies._lock
        assert lock is not held and lock.acquire(blocking=False)
        lock.release()
    finally:
        cache_entries.local_bodies._lock = saved
