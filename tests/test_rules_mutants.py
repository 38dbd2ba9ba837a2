"""Behaviour of invalidation/rules.py and of the outbox's ``read()`` that mutation testing
found unpinned (docs/testing.md, "Mutation testing").

mutmut switches a mutant on in a process that has already imported every module and
built the rule registry (its settings loaded, its field map filled for the models the
sample registers at start-up). So these tests register rules inside the test (which
rewires the process's registry with the mutated code), change the ``INVALIDATION``
setting (which reloads it), and start the field map empty.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from catalog.models import Category, Product
from django.apps import apps
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token, TokenProxy

from drf_redis_toolkit import invalidation
from drf_redis_toolkit.invalidation import cache_invalidated, outbox, rules
from drf_redis_toolkit.invalidation.rules import Names
from drf_redis_toolkit.models import PendingInvalidation
from tests.testapp.models import CachedWidget, WidgetShelf

pytestmark = pytest.mark.django_db(transaction=True)


class Delivered:
    """Every name the ``cache_invalidated`` signal reported, namespaces and keys apart."""

    def __init__(self) -> None:
        self.namespaces: set[str] = set()
        self.keys: set[str] = set()

    def __call__(self, sender, namespaces, keys, **kwargs) -> None:
        self.namespaces |= set(namespaces)
        self.keys |= set(keys)

    def clear(self) -> None:
        self.namespaces.clear()
        self.keys.clear()

    def keys_after(self, write) -> set[str]:
        """The keys invalidated by ``write()`` alone."""
        self.clear()
        write()
        return set(self.keys)


@pytest.fixture
def delivered(backend):
    sent = Delivered()
    cache_invalidated.connect(sent, dispatch_uid="test-rules-mutants")
    yield sent
    cache_invalidated.disconnect(dispatch_uid="test-rules-mutants")


# -- templates ------------------------------------------------------------------------------


def test_templates_name_the_primary_key_a_field_or_its_attname(monkeypatch):
    monkeypatch.setattr(rules, "_MODEL_FIELDS", {})  # the first rule for the model, as at start-up
    rule = rules._Rule(Product)
    rule.add_templates(
        ["product:{pk}", "category:{category}:products"],  # a foreign key by name: its id
        ["slug:{slug}", "by-id:{category_id}"],
        "test",
    )
    names = rule.names([Product(pk=7, slug="novel", category_id=3)])
    assert names == Names(
        frozenset({"product:7", "category:3:products"}), frozenset({"slug:novel", "by-id:3"})
    )
    assert rule.tracked_fields == {"category_id", "slug"}


def test_a_function_among_the_templates_keeps_the_templates_after_it():
    rule = rules._Rule(Category)
    rule.add_templates(
        [lambda categories: ["menu"], "landing:{slug}"],
        [lambda categories: "landing-key", "category:{pk}"],
        "test",
    )
    assert rule.names([Category(pk=2, slug="books")]) == Names(
        frozenset({"menu", "landing:books"}), frozenset({"landing-key", "category:2"})
    )


WHERE = "DRF_REDIS_TOOLKIT['INVALIDATION']['catalog.Category']"


@pytest.mark.parametrize(
    ("namespaces", "keys", "message"),
    [
        ("menu", [], f"{WHERE}['namespaces'] must be a list, not a string"),
        ([], "menu", f"{WHERE}['keys'] must be a list, not a string"),
        ([""], [], f"{WHERE}['namespaces']: '' is not a template"),
        ([], [5], f"{WHERE}['keys']: 5 is not a template"),
        (
            ["menu:{"],
            [],
            f"{WHERE}['namespaces']: template 'menu:{{' does not parse: "
            "Single '{' encountered in format string",
        ),
        (
            [],
            ["landing:{nope}"],
            f"{WHERE}['keys']: template 'landing:{{nope}}' names ['nope'], which are not fields "
            "of catalog.Category; use 'pk' or one of ['description', 'id', 'name', 'slug']",
        ),
    ],
)
def test_a_refused_rule_item_is_named_exactly(namespaces, keys, message):
    rule = rules._Rule(Category)
    with pytest.raises(ImproperlyConfigured) as refused:
        rule.add_templates(namespaces, keys, WHERE)
    assert str(refused.value) == message


@pytest.mark.parametrize("kind", ["namespaces", "keys"])
def test_register_refuses_one_string_instead_of_a_list(kind):
    """``register(Category, namespaces="menu")`` once registered "m", "e", "n" and "u"."""
    with pytest.raises(ImproperlyConfigured) as refused:
        invalidation.register(Category, **{kind: "menu"})
    assert (
        str(refused.value) == f"register(catalog.Category)[{kind!r}] must be a list, not a string"
    )
    invalidation.unregister(Category)
    assert invalidation.names_for(Category(pk=1, slug="books")) == Names()


def test_the_settings_namespaces_and_keys_both_apply(settings, backend, delivered):
    books = Category.objects.create(name="Books", slug="books")
    settings.DRF_REDIS_TOOLKIT = {
        **backend.settings,
        "INVALIDATION": {
            "catalog.Category": {"namespaces": ["menu:{slug}"], "keys": ["category:{pk}"]}
        },
    }  # the setting is re-read: the registry's load_settings() runs here
    expected = Names(frozenset({"menu:books"}), frozenset({f"category:{books.pk}"}))
    assert invalidation.names_for(books) == expected
    delivered.clear()
    books.save()
    assert (delivered.namespaces, delivered.keys) == (set(expected.namespaces), set(expected.keys))


# -- which models are wired -------------------------------------------------------------------


def test_the_rules_of_a_model_reach_its_proxy(delivered):
    ann = User.objects.create(username="ann")
    invalidation.register(Token, keys=["token:user:{user_id}"])
    try:
        delivered.clear()
        TokenProxy.objects.create(user=ann)  # the signals name the proxy class
        assert delivered.keys == {f"token:user:{ann.pk}"}
    finally:
        invalidation.unregister(Token)


def test_a_second_register_of_a_model_adds_to_the_first(delivered):
    """Two apps may each ``register()`` names for one model: a write then reaches both
    sets of names, not only the last registered."""
    ann = User.objects.create(username="ann")
    invalidation.register(Token, keys=["token:user:{user_id}"], namespaces=["tokens"])
    invalidation.register(Token, keys=["session:user:{user_id}"], namespaces=["logins"])
    try:
        delivered.clear()
        Token.objects.create(user=ann)
        assert delivered.keys == {f"token:user:{ann.pk}", f"session:user:{ann.pk}"}
        assert delivered.namespaces == {"tokens", "logins"}
    finally:
        invalidation.unregister(Token)


def test_a_relation_without_a_reverse_accessor_still_invalidates_the_widgets(delivered):
    """``WidgetShelf.widgets`` has ``related_name="+"``: seen from ``CachedWidget``, a
    hidden field. Adding to it, and deleting a shelf (which drops its m2m rows without
    any ``m2m_changed``), change the widgets' names."""
    widget = CachedWidget.objects.create(name="w")
    shelf = WidgetShelf.objects.create(name="s")
    invalidation.register(CachedWidget, keys=["widget:{pk}"])
    try:
        assert delivered.keys_after(lambda: shelf.widgets.add(widget)) == {f"widget:{widget.pk}"}
        assert delivered.keys_after(shelf.delete) == {f"widget:{widget.pk}"}
    finally:
        invalidation.unregister(CachedWidget)
    # Unregistered: the relation's receivers are gone with the rule.
    other = WidgetShelf.objects.create(name="other")
    delivered.clear()
    other.widgets.add(widget)
    other.delete()
    assert f"widget:{widget.pk}" not in delivered.keys


def test_deleting_the_partner_of_either_m2m_relation_invalidates_the_model(delivered):
    """A user has two m2m relations (groups, permissions): both partners get delete receivers."""
    ann = User.objects.create(username="ann")
    staff = Group.objects.create(name="staff")
    permission = Permission.objects.create(
        codename="polish_widget",
        name="Can polish widgets",
        content_type=ContentType.objects.get_for_model(CachedWidget),
    )
    invalidation.register(User, keys=["user:{pk}"])
    try:
        ann.groups.add(staff)
        ann.user_permissions.add(permission)
        assert delivered.keys_after(staff.delete) == {f"user:{ann.pk}"}
        assert delivered.keys_after(permission.delete) == {f"user:{ann.pk}"}
    finally:
        invalidation.unregister(User)


def test_a_model_only_foreign_key_related_to_a_rule_keeps_djangos_fast_delete(delivered):
    """Delete receivers go to the rule's model and its m2m partners only: a token (a
    one-to-one to the user) is still deleted in one query, with no signal per row."""
    ann = User.objects.create(username="ann")
    Token.objects.create(user=ann)
    invalidation.register(User, keys=["user:{pk}"])
    try:
        with CaptureQueriesContext(connection) as queries:
            deleted, _ = Token.objects.filter(user=ann).delete()
        assert deleted == 1
        statements = [q["sql"].split()[0] for q in queries.captured_queries]
        assert [s for s in statements if s not in ("BEGIN", "COMMIT")] == ["DELETE"]
    finally:
        invalidation.unregister(User)


def test_rules_registered_in_an_app_ready_are_wired(monkeypatch, delivered):
    """An app listed after drf_redis_toolkit registers in its ``ready()`` (as the sample
    does): the toolkit's ``setup()`` has run, and ``apps.ready`` is not yet true."""
    widget = CachedWidget.objects.create(name="w")
    monkeypatch.setattr(apps, "ready", False)
    invalidation.register(CachedWidget, keys=["widget:{pk}"])
    monkeypatch.setattr(apps, "ready", True)  # every ready() done; nothing rewires now
    try:
        delivered.clear()
        widget.save()
        assert delivered.keys == {f"widget:{widget.pk}"}
    finally:
        invalidation.unregister(CachedWidget)


def test_the_sample_wires_the_rules_its_apps_register_at_start_up():
    """``carts`` registers the only rule of ``CartItem`` in its ``ready()``: a cart item
    changed in the admin or a shell must reach ``cart:user:{id}`` (a fresh process)."""
    code = (
        "import django; django.setup()\n"
        "from django.db.models.signals import post_delete, post_save\n"
        "from carts.models import CartItem\n"
        "print(post_save.has_listeners(CartItem), post_delete.has_listeners(CartItem))\n"
    )
    root = Path(__file__).resolve().parent.parent  # this tree's package, not an installed one
    sample = root / "sample_api"
    path = os.pathsep.join(p for p in (str(root), str(sample), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": path}
    # Run from the tree's root: mutmut's stats run reads its pyproject.toml from the
    # working directory, in this child too (it inherits MUTANT_UNDER_TEST).
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


# -- outbox.read() -----------------------------------------------------------------------------


def _row(names: Names) -> PendingInvalidation:
    return PendingInvalidation.objects.create(names=outbox._encode(names))


@pytest.fixture
def fresh_tables(monkeypatch):
    """No database known to lack the outbox table yet."""
    tables: dict[str, bool] = {}
    monkeypatch.setattr(outbox, "_tables", tables)
    return tables


@pytest.fixture
def database_without_outbox(transactional_db):
    """A second database (an empty SQLite in memory): no outbox table there."""
    alias = "no_outbox"
    connections.settings[alias] = connections.configure_settings(
        {
            "default": connections.settings["default"],
            alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        }
    )[alias]
    # Connected here: the test case refuses to open, later, a database it was not given.
    connections[alias].connect()
    try:
        yield alias
    finally:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]


def test_read_with_no_aliases_reads_every_database(fresh_tables):
    first = _row(Names(frozenset({"a"})))
    second = _row(Names(keys=frozenset({"k"})))
    assert outbox.read() == (
        Names(frozenset({"a"}), frozenset({"k"})),
        {("default", first.pk), ("default", second.pk)},
        True,
    )
    assert outbox.read(["default"])[1] == {("default", first.pk), ("default", second.pk)}


def test_read_given_no_databases_reads_none(fresh_tables):
    """What ``poll()`` asks when every connection is inside a transaction."""
    _row(Names(frozenset({"a"})))
    assert outbox.read([]) == (Names(), set(), True)


def test_a_database_known_to_lack_the_table_is_not_queried_again(fresh_tables):
    row = _row(Names(frozenset({"a"})))
    fresh_tables["gone"] = False  # warned once already (it has no table)
    with CaptureQueriesContext(connection) as queries:
        assert outbox.read(["gone", "default"]) == (
            Names(frozenset({"a"})),
            {("default", row.pk)},
            True,
        )
    assert len(queries.captured_queries) == 1  # the default database's SELECT
    fresh_tables["default"] = False
    with CaptureQueriesContext(connection) as queries:
        assert outbox.read(["default"]) == (Names(), set(), True)
    assert queries.captured_queries == []


def test_a_database_without_the_table_is_named_in_one_warning_and_skipped(
    fresh_tables, database_without_outbox, caplog
):
    row = _row(Names(frozenset({"a"})))
    table = PendingInvalidation._meta.db_table
    with caplog.at_level(logging.WARNING, logger="drf_redis_toolkit.invalidation"):
        assert outbox.read([database_without_outbox, "default"]) == (
            Names(frozenset({"a"})),
            {("default", row.pk)},
            True,
        )
        assert outbox.read([database_without_outbox])[1] == set()  # skipped, not re-warned
    assert [r.getMessage() for r in caplog.records] == [
        f"drf_redis_toolkit: no outbox table in database '{database_without_outbox}' (run "
        "migrate?): invalidations made there during a Redis outage do not survive their "
        f"process (no such table: {table})"
    ]
    assert fresh_tables == {database_without_outbox: False}


def test_an_invalid_row_is_logged_at_error_with_its_pk_and_dropped(fresh_tables, caplog):
    good = _row(Names(frozenset({"a"})))
    bad = PendingInvalidation.objects.create(names="not json")
    with caplog.at_level(logging.ERROR, logger="drf_redis_toolkit.invalidation"):
        names, rows, complete = outbox.read(["default"])
    assert complete
    assert names == Names(frozenset({"a"}))
    assert rows == {("default", good.pk), ("default", bad.pk)}  # deleted once delivered
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, f"drf_redis_toolkit: outbox row {bad.pk} is not valid; dropped")
    ]


@pytest.mark.django_db
def test_a_bad_invalidation_setting_is_raised_at_every_save_until_fixed(shop, settings):
    """A setting naming no model, changed while running: refused where a save sees it
    (not swallowed by the settings signal), and at every save, not just the first."""
    from django.test import override_settings

    base = dict(settings.DRF_REDIS_TOOLKIT)
    bad = {**base, "INVALIDATION": {**base["INVALIDATION"], "nope.Nothing": {"namespaces": ["x"]}}}
    with override_settings(DRF_REDIS_TOOLKIT=bad):
        for slug in ("a", "b"):
            with pytest.raises(ImproperlyConfigured, match=r"nope\.Nothing"):
                Category.objects.create(name=slug, slug=slug)
    Category.objects.create(name="c", slug="c")  # fixed: saves work again
