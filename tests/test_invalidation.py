"""Signal-driven invalidation: what, when (after the commit), and what survives an outage.

Runs on the sample API's catalogue models with its ``INVALIDATION`` setting.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pytest
from carts.models import Cart, CartItem
from catalog.models import Category, Product, Tag
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from drf_redis_toolkit import invalidation
from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.client import cache_product, get_cached_product, redis_client
from drf_redis_toolkit.generations import read_generations
from drf_redis_toolkit.invalidation import cache_invalidated
from tests.sample_fixtures import Generations, apply_shop_settings

pytestmark = pytest.mark.django_db(transaction=True)


def product_names(product: Product, category_id: int | None = None) -> list[str]:
    category = product.category_id if category_id is None else category_id
    return [f"product:{product.pk}", f"category:{category}:products", "products:all"]


@pytest.fixture
def signals():
    """Every ``cache_invalidated`` send, as ``(sender, namespaces, keys)``."""
    sent: list[tuple] = []

    def receiver(sender, namespaces, keys, **kwargs):
        sent.append((sender, namespaces, keys))

    cache_invalidated.connect(receiver, dispatch_uid="test-invalidation-signals")
    yield sent
    cache_invalidated.disconnect(dispatch_uid="test-invalidation-signals")


# -- what a save, a delete and an m2m change invalidate ------------------------------


def test_a_save_bumps_the_rules_names_and_deletes_their_client_keys(shop, catalog):
    product = catalog.products[0]
    cache_product(product.pk, {"name": "old"})
    redis_client.set("products:all", ["old list"])
    gens = Generations([*product_names(product), "categories:all", "category:999:products"])

    product.name = "new"
    product.save()

    assert gens.bumped() == set(product_names(product))
    assert get_cached_product(product.pk) is None  # the seed's Example 7, from one setting entry
    assert redis_client.get("products:all") is None


def test_moving_a_product_invalidates_the_old_and_the_new_category(shop, catalog):
    books, games = catalog.categories
    product = Product.objects.get(pk=catalog.products[0].pk)
    gens = Generations([f"category:{books.pk}:products", f"category:{games.pk}:products"])

    product.category = games
    product.save()

    assert gens.bumped() == {f"category:{books.pk}:products", f"category:{games.pk}:products"}


def test_a_hand_built_instance_still_invalidates_the_category_in_the_database(shop, catalog):
    """The old values come from the database row, not from what the instance was loaded with."""
    books, games = catalog.categories
    original = catalog.products[0]
    gens = Generations([f"category:{books.pk}:products", f"category:{games.pk}:products"])

    Product(
        pk=original.pk,
        name="x",
        slug=original.slug,
        price=1,
        stock=1,
        category=games,
        created_at=original.created_at,
    ).save()

    assert gens.bumped() == {f"category:{books.pk}:products", f"category:{games.pk}:products"}


def test_a_delete_invalidates(shop, catalog):
    product = catalog.products[1]
    names = product_names(product)
    gens = Generations(names)
    product.delete()
    assert gens.bumped() == set(names)


def test_m2m_changes_from_either_side_and_clear_invalidate_the_products(shop, catalog):
    new, sale = catalog.tags
    first, second = catalog.products[0], catalog.products[1]
    gens = Generations([f"product:{first.pk}", f"product:{second.pk}"])

    first.tags.add(sale)  # forward
    assert gens.bumped() == {f"product:{first.pk}"}

    gens.snapshot()
    sale.products.add(second)  # reverse: the other side's rules apply to pk_set
    assert f"product:{second.pk}" in gens.bumped()

    gens.snapshot()
    sale.products.clear()  # post_clear has no pk_set: it was read at pre_clear
    assert gens.bumped() == {f"product:{first.pk}", f"product:{second.pk}"}

    gens.snapshot()
    first.tags.remove(new)
    assert f"product:{first.pk}" in gens.bumped()


@pytest.mark.parametrize("concrete", [True, False], ids=["concrete", "not-concrete"])
def test_m2m_clear_invalidates_whatever_field_concrete_says(shop, catalog, monkeypatch, concrete):
    """Django 6.0 made ``ManyToManyField.concrete`` ``False``; the receivers must not read it.

    Setting it on the field reproduces either Django's behaviour whichever one is installed.
    """
    field = Product._meta.get_field("tags")
    monkeypatch.setattr(field, "concrete", concrete)
    invalidation._registry.rewire()  # the through model is found again under this value
    first, second = catalog.products[0], catalog.products[1]
    sale = catalog.tags[1]
    first.tags.add(sale)
    second.tags.add(sale)
    gens = Generations([f"product:{first.pk}", f"product:{second.pk}"])

    sale.products.clear()
    assert gens.bumped() == {f"product:{first.pk}", f"product:{second.pk}"}

    second.tags.add(sale)
    gens.snapshot()
    first.tags.clear()  # the forward side's clear
    assert gens.bumped() == {f"product:{first.pk}"}


def test_deleting_a_tag_invalidates_the_products_that_carried_it(shop, catalog):
    """Deleting one side of an m2m drops its through rows with no ``m2m_changed``.

    The sample's ``Tag`` rule (a function listing the tagged products) must run
    before the collector deletes those rows, or it finds no product at all.
    """
    tag = Tag.objects.get(slug="new")
    tagged = catalog.products[0]
    gens = Generations([f"product:{tagged.pk}", f"category:{tagged.category_id}:products"])
    tag.delete()
    assert gens.bumped() == set(gens.names)


def test_deleting_the_side_without_rules_invalidates_the_side_with_rules(shop, catalog, settings):
    """Only ``Product`` has rules (as in getting-started); deleting a ``Tag`` changes products."""
    tag_rule = invalidation._registry.python.pop(Tag)
    try:
        rule = {"keys": ["product:{pk}", "category:{category_id}:products"]}
        settings.DRF_REDIS_TOOLKIT = {**shop.settings, "INVALIDATION": {"catalog.Product": rule}}
        first, second, untagged = catalog.products[0], catalog.products[1], catalog.products[2]
        sale = catalog.tags[1]
        second.tags.add(sale)
        gens = Generations([f"product:{p.pk}" for p in (first, second, untagged)])
        Tag.objects.filter(pk__in=[t.pk for t in catalog.tags]).delete()  # a queryset, both
        assert gens.bumped() == {f"product:{first.pk}", f"product:{second.pk}"}
    finally:
        invalidation._registry.python[Tag] = tag_rule
        invalidation._registry.rewire()


def test_a_rolled_back_delete_invalidates_nothing(shop, catalog):
    tag = Tag.objects.get(slug="new")
    gens = Generations([f"product:{catalog.products[0].pk}"])
    with pytest.raises(RuntimeError), transaction.atomic():
        tag.delete()
        raise RuntimeError("roll back")
    assert gens.bumped() == set()


def test_a_rule_that_only_reads_the_pk_adds_no_query_to_a_save(shop, catalog):
    category = catalog.categories[0]
    category.name = "Renamed"
    with CaptureQueriesContext(connection) as queries:
        category.save()
    assert len(queries) == 1  # the UPDATE; no read of the old row


# -- when: after the commit, never after a rollback --------------------------------


def test_nothing_is_invalidated_before_the_commit(shop, catalog):
    product = catalog.products[0]
    gens = Generations(product_names(product))
    with transaction.atomic():
        product.price = Decimal("99.00")
        product.save()
        assert gens.bumped() == set()  # still inside the transaction
    assert gens.bumped() == set(product_names(product))


def test_a_rolled_back_write_invalidates_nothing(shop, catalog, signals):
    product = catalog.products[0]
    cache_product(product.pk, {"name": "cached"})
    gens = Generations(product_names(product))

    with pytest.raises(RuntimeError), transaction.atomic():
        product.price = Decimal("99.00")
        product.save()
        raise RuntimeError("roll back")

    assert gens.bumped() == set()
    assert get_cached_product(product.pk) == {"name": "cached"}
    assert signals == []
    assert Product.objects.get(pk=product.pk).price != Decimal("99.00")


def test_a_rolled_back_savepoint_keeps_only_the_outer_write(shop, catalog):
    first, second = catalog.products[0], catalog.products[3]
    gens = Generations([f"product:{first.pk}", f"product:{second.pk}"])
    with transaction.atomic():
        first.save()
        try:
            with transaction.atomic():
                second.save()
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
    assert gens.bumped() == {f"product:{first.pk}"}


# -- writes that send no signals: the opt-in queryset ------------------------------


def test_queryset_update_invalidates_rows_before_and_after(shop, catalog):
    books, games = catalog.categories
    moved = [p for p in catalog.products if p.category_id == books.pk]
    names = [f"product:{p.pk}" for p in moved]
    gens = Generations(
        [*names, f"category:{books.pk}:products", f"category:{games.pk}:products", "products:all"]
    )

    count = Product.objects.filter(category=books).update(category=games)

    assert count == len(moved)
    assert gens.bumped() == set(gens.names)


def test_bulk_create_and_bulk_update_invalidate(shop, catalog):
    books, games = catalog.categories
    gens = Generations([f"category:{books.pk}:products", "products:all"])
    created = Product.objects.bulk_create(
        [
            Product(name=f"bulk {n}", slug=f"bulk-{n}", price=1, stock=1, category=books)
            for n in (1, 2)
        ]
    )
    assert gens.bumped() == set(gens.names)

    gens = Generations(
        [
            f"product:{created[0].pk}",
            f"category:{books.pk}:products",
            f"category:{games.pk}:products",
        ]
    )
    created[0].category = games
    Product.objects.bulk_update([created[0]], ["category"])
    assert gens.bumped() == set(gens.names)


def test_an_upsert_invalidates_the_category_of_the_row_it_overwrites(shop, catalog):
    books, games = catalog.categories
    existing = catalog.products[0]  # in books
    gens = Generations([f"category:{books.pk}:products", f"category:{games.pk}:products"])
    Product.objects.bulk_create(
        [Product(name="upsert", slug=existing.slug, price=2, stock=2, category=games)],
        update_conflicts=True,
        unique_fields=["slug"],
        update_fields=["name", "category"],
    )
    assert Product.objects.get(pk=existing.pk).category_id == games.pk
    assert gens.bumped() == set(gens.names)


def test_update_of_a_values_queryset_invalidates_too(shop, catalog):
    product = catalog.products[0]
    gens = Generations([f"product:{product.pk}"])
    assert Product.objects.filter(pk=product.pk).values("name").update(name="values") == 1
    assert gens.bumped() == {f"product:{product.pk}"}


def test_queryset_update_inside_a_rolled_back_transaction_invalidates_nothing(shop, catalog):
    gens = Generations(["products:all"])
    with pytest.raises(RuntimeError), transaction.atomic():
        Product.objects.update(stock=0)
        raise RuntimeError("roll back")
    assert gens.bumped() == set()


# -- the Python API ------------------------------------------------------------------


def test_register_a_function_then_unregister(shop, catalog):
    seen = []

    def related(categories):
        seen.append([c.pk for c in categories])
        return [f"landing:{c.slug}" for c in categories]

    invalidation.register(Category, namespaces=[related], keys=["menu:{slug}"])
    try:
        category = catalog.categories[0]
        redis_client.set(f"menu:{category.slug}", "cached")
        gens = Generations([f"landing:{category.slug}", f"menu:{category.slug}"])
        category.name = "Renamed"
        category.save()
        assert gens.bumped() == set(gens.names)
        assert redis_client.get(f"menu:{category.slug}") is None
        # Functions get a list: the row as it was before the save, and as saved.
        assert seen[-1] == [category.pk, category.pk]
    finally:
        invalidation.unregister(Category)
    gens = Generations([f"landing:{category.slug}"])
    category.save()
    assert gens.bumped() == set()  # the setting's rules stay; the Python one is gone


def test_cart_rules_reach_the_cart_owner(shop, catalog, django_user_model):
    """CartItem -> its cart's owner, Product -> every cart holding it (carts/invalidation.py)."""
    user = django_user_model.objects.create_user("ann", password="pw")
    cart = Cart.objects.create(user=user)
    product = catalog.products[0]
    redis_client.set(f"cart:user:{user.pk}", {"cached": True})
    gens = Generations([f"cart:user:{user.pk}"])
    item = CartItem.objects.create(cart=cart, product=product, quantity=1)
    assert gens.bumped() == {f"cart:user:{user.pk}"}
    assert redis_client.get(f"cart:user:{user.pk}") is None

    gens.snapshot()
    product.price = Decimal("1.00")
    product.save()  # the cart shows the price
    assert gens.bumped() == {f"cart:user:{user.pk}"}

    gens.snapshot()
    item.delete()
    assert gens.bumped() == {f"cart:user:{user.pk}"}


def test_names_for_and_a_template_with_a_null_field(shop, catalog):
    names = invalidation.names_for(catalog.products[0])
    assert set(names.keys) == set(product_names(catalog.products[0]))
    assert f"cart:user:{None}" not in names.keys


def test_batch_sends_one_delivery_for_many_writes(shop, catalog, signals):
    with invalidation.batch():
        for product in catalog.products:
            product.save()
        assert signals == []  # collected, not yet delivered
    assert len(signals) == 1
    sender, _namespaces, keys = signals[0]
    assert sender is Product
    assert {f"product:{p.pk}" for p in catalog.products} <= keys


def test_invalidate_outside_a_transaction_is_immediate(shop):
    gens = Generations(["custom:1"])
    invalidation.invalidate(namespaces=["custom:1"])
    assert gens.bumped() == {"custom:1"}


def test_a_single_name_as_a_plain_string_is_one_name(shop):
    """``invalidate("product:1")`` is the namespace ``product:1``, not nine letters."""
    gens = Generations(["product:1", "p", "r", ":", "1"])
    invalidation.invalidate("product:1")
    assert gens.bumped() == {"product:1"}
    gens = Generations(["product:2", "custom:2"])
    assert invalidation.invalidate_now("custom:2", "product:2") is True
    assert gens.bumped() == {"custom:2", "product:2"}


def test_bad_rules_fail_at_start_up_naming_the_culprit(shop, settings):
    settings.DRF_REDIS_TOOLKIT = {
        **shop.settings,
        "INVALIDATION": {"catalog.Product": {"keys": ["product:{colour}"]}},
    }
    with pytest.raises(ImproperlyConfigured, match="colour"):
        invalidation.setup()
    settings.DRF_REDIS_TOOLKIT = {
        **shop.settings,
        "INVALIDATION": {"catalog.Nope": {"keys": ["x"]}},
    }
    with pytest.raises(ImproperlyConfigured, match=r"catalog\.Nope"):
        invalidation.setup()
    settings.DRF_REDIS_TOOLKIT = {**shop.settings, "INVALIDATION": {}}
    invalidation.setup()


def test_receivers_follow_the_setting(shop, catalog, settings):
    """Models leave the wiring when the setting drops them (Django keeps fast deletes)."""
    from django.db.models.signals import post_save

    settings.DRF_REDIS_TOOLKIT = {**shop.settings, "INVALIDATION": {}}
    assert not post_save.has_listeners(Category)
    assert post_save.has_listeners(Product)  # still registered from Python (carts)
    apply_shop_settings(settings, shop)
    assert post_save.has_listeners(Category)


# -- Redis outages -------------------------------------------------------------------


def _dead_redis(settings, backend):
    from tests.servers import free_port

    settings.DRF_REDIS_TOOLKIT = {
        **backend.settings,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "KEY_PREFIX": "shop",
        "INVALIDATION": settings.DRF_REDIS_TOOLKIT["INVALIDATION"],
        "CIRCUIT_BREAKER_COOLDOWN": 0,
    }


def test_an_invalidation_lost_to_an_outage_is_logged_kept_and_delivered_later(
    real_shop, catalog, settings, caplog
):
    product = catalog.products[0]
    names = product_names(product)
    gens = Generations(names)
    cache_product(product.pk, {"name": "stale"})

    _dead_redis(settings, real_shop)
    with caplog.at_level(logging.ERROR, logger="drf_redis_toolkit.invalidation"):
        product.price = Decimal("42.00")
        product.save()  # the write succeeds; the invalidation can't reach Redis
    assert "could not invalidate" in caplog.text
    assert set(names) <= set(invalidation.pending_invalidations()["keys"])

    apply_shop_settings_keep_pending(settings, real_shop)
    assert invalidation.retry_pending() is True
    assert invalidation.pending_invalidations()["keys"] == []
    assert gens.bumped() == set(names)
    assert get_cached_product(product.pk) is None


def test_the_background_retry_delivers_when_redis_answers_again(real_shop, catalog, settings):
    product = catalog.products[0]
    gens = Generations([f"product:{product.pk}"])
    _dead_redis(settings, real_shop)
    product.save()
    assert invalidation.pending_invalidations()["keys"]
    apply_shop_settings_keep_pending(settings, real_shop)
    deadline = time.monotonic() + 10
    while invalidation.pending_invalidations()["keys"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert invalidation.pending_invalidations()["keys"] == []
    assert gens.bumped() == {f"product:{product.pk}"}


def test_an_overflowing_backlog_drops_every_generation_on_recovery(
    real_shop, catalog, settings, monkeypatch
):
    monkeypatch.setattr(invalidation.delivery, "MAX_PENDING", 5)
    gens = Generations(["unrelated:namespace", "products:all"])
    cache_product(12345, {"name": "stale"})
    _dead_redis(settings, real_shop)
    for product in catalog.products:
        product.save()
    assert invalidation.pending_invalidations()["overflowed"] is True
    apply_shop_settings_keep_pending(settings, real_shop)
    assert invalidation.retry_pending() is True
    # Every generation moved (even one no write named), and every key a
    # "keys" template can produce is gone.
    assert gens.bumped() == {"unrelated:namespace", "products:all"}
    assert get_cached_product(12345) is None
    assert not list(real_shop.raw.scan_iter(match=keyspace.client_key("product:*")))


def apply_shop_settings_keep_pending(settings, backend):
    backlog = invalidation._pending.backlog
    apply_shop_settings(settings, backend)
    invalidation._pending.put(backlog)


def test_generations_survive_in_redis_not_in_process(shop, catalog):
    """The generation is in Redis: another process (a fresh read) sees the bump."""
    product = catalog.products[0]
    before = read_generations(f"product:{product.pk}")[f"product:{product.pk}"]
    product.save()
    raw = shop.raw.get(keyspace.generation_key(f"product:{product.pk}"))
    assert int(raw) > before


def test_tag_rename_reaches_the_tagged_products(shop, catalog):
    tag = Tag.objects.get(slug="new")
    tagged = catalog.products[0]
    gens = Generations([f"product:{tagged.pk}", f"category:{tagged.category_id}:products"])
    tag.name = "Brand new"
    tag.save()
    assert gens.bumped() == set(gens.names)


def test_a_pending_name_is_a_miss_in_this_process_and_nothing_is_stored(
    shop, catalog, monkeypatch
):
    """Names this process could not deliver yet: their entries may be stale, so never served."""
    from rest_framework.test import APIClient

    from drf_redis_toolkit.exceptions import RedisUnavailable

    def refused(names, everything):
        raise RedisUnavailable("deliveries refused by the test")

    apply = invalidation.delivery._apply
    monkeypatch.setattr(invalidation.delivery, "_apply", refused)  # Redis up for reads only

    product = catalog.products[0]
    url = f"/api/products/{product.pk}/"
    client = APIClient()
    client.get(url)
    assert client.get(url)["X-Cache"] == "HIT"
    namespace = f"product:{product.pk}"
    invalidation._pending.put(
        invalidation.delivery._Backlog(invalidation.Names(keys=frozenset({namespace})))
    )
    assert invalidation.is_pending(namespace)
    assert not invalidation.is_pending("categories:all")
    assert [client.get(url)["X-Cache"] for _ in range(3)] == ["MISS"] * 3
    assert client.get("/api/categories/")["X-Cache"] in ("MISS", "HIT")  # other names unaffected
    monkeypatch.setattr(invalidation.delivery, "_apply", apply)
    invalidation.retry_pending()  # or the retry thread, started by put(), got there first
    deadline = time.monotonic() + 10
    while invalidation.is_pending(namespace) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not invalidation.is_pending(namespace)
    assert [client.get(url)["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]


# -- the outbox: invalidations that survive their process ----------------------------------


def _outbox_rows() -> int:
    from drf_redis_toolkit.models import PendingInvalidation

    return PendingInvalidation.objects.count()


def _redis_known_down(settings, backend) -> None:
    """Point the toolkit at a dead port and let it find out (the breaker opens)."""
    _dead_redis(settings, backend)
    settings.DRF_REDIS_TOOLKIT = {**settings.DRF_REDIS_TOOLKIT, "CIRCUIT_BREAKER_COOLDOWN": 30}
    assert redis_client.ping() is False
    from drf_redis_toolkit import connection as toolkit_connection

    assert toolkit_connection.get_breaker().is_open


def test_with_redis_up_a_write_adds_no_database_query_for_the_outbox(shop, catalog):
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from drf_redis_toolkit.models import PendingInvalidation
    from tests.test_sample_api import client_for

    admin = get_user_model().objects.create_user("admin", password="pw", is_staff=True)
    staff = client_for(admin)
    product = catalog.products[0]
    table = PendingInvalidation._meta.db_table
    with CaptureQueriesContext(connection) as writes:
        with transaction.atomic():
            product.price = Decimal("1.23")
            product.save()
        product.save()  # autocommit
        invalidation.invalidate_now(["products:all"])
    assert not [q["sql"] for q in writes.captured_queries if table in q["sql"]]
    with CaptureQueriesContext(connection) as requests:
        assert staff.patch(f"/api/products/{product.pk}/", {"price": "2.00"}).status_code == 200
        assert APIClient().get(f"/api/products/{product.pk}/").status_code == 200
    # At most the rate-limited look at the outbox (a SELECT); never a write.
    touching = [q["sql"] for q in requests.captured_queries if table in q["sql"]]
    assert all(sql.lstrip().upper().startswith("SELECT") for sql in touching), touching
    assert _outbox_rows() == 0


def test_a_write_while_redis_is_known_down_commits_its_outbox_row_with_the_data(
    real_shop, catalog, settings
):
    first, second = catalog.products[0], catalog.products[1]
    gens = Generations([*product_names(first), *product_names(second)])
    _redis_known_down(settings, real_shop)
    with transaction.atomic():
        first.price = Decimal("99.00")
        first.save()
        assert _outbox_rows() == 1  # written before the commit, in the same transaction
    with pytest.raises(RuntimeError), transaction.atomic():
        second.price = Decimal("98.00")
        second.save()
        raise RuntimeError("rolled back")
    assert _outbox_rows() == 1  # the rolled-back write took its row along

    # The writer dies: its in-memory backlog is gone, the row is not.
    invalidation._pending.clear()
    apply_shop_settings(settings, real_shop)  # Redis reachable again, for a new process
    from drf_redis_toolkit.invalidation import outbox

    assert outbox.poll(force=True) is True
    assert _outbox_rows() == 0
    assert gens.bumped() == set(product_names(first))
    assert invalidation.pending_invalidations()["keys"] == []


def test_a_delivery_that_fails_at_the_commit_writes_an_outbox_row(real_shop, catalog, settings):
    product = catalog.products[0]
    gens = Generations(product_names(product))
    _dead_redis(settings, real_shop)  # not known down yet: the breaker is closed
    product.save()
    assert _outbox_rows() == 1
    invalidation._pending.clear()  # the writer dies
    apply_shop_settings(settings, real_shop)
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("deliver_invalidations", stdout=out)
    assert "Delivered 1 outbox row(s)" in out.getvalue()
    assert _outbox_rows() == 0
    assert gens.bumped() == set(product_names(product))
    call_command("deliver_invalidations", stdout=out)  # nothing left: harmless


def test_deliver_invalidations_fails_while_redis_is_unreachable(real_shop, catalog, settings):
    from django.core.management import CommandError, call_command

    _dead_redis(settings, real_shop)
    catalog.products[0].save()
    assert _outbox_rows() == 1
    invalidation._pending.clear()
    with pytest.raises(CommandError, match="Redis unreachable"):
        call_command("deliver_invalidations")
    assert _outbox_rows() == 1


def test_the_outbox_poll_is_rate_limited_and_makes_names_pending(real_shop, catalog, settings):
    from drf_redis_toolkit.invalidation import outbox

    product = catalog.products[0]
    _redis_known_down(settings, real_shop)
    product.save()
    invalidation._pending.clear()  # as seen from another process: only the row knows
    assert not invalidation.is_pending(f"product:{product.pk}")
    assert outbox.poll(force=True) is True
    assert invalidation.is_pending(f"product:{product.pk}")  # Redis down: a miss here
    assert outbox.poll() is False  # looked less than POLL_INTERVAL ago


def test_an_outbox_larger_than_one_look_makes_every_name_pending(
    real_shop, catalog, settings, monkeypatch
):
    from drf_redis_toolkit.invalidation import outbox

    _redis_known_down(settings, real_shop)
    catalog.products[0].save()
    catalog.products[1].save()
    assert _outbox_rows() == 2
    invalidation._pending.clear()
    monkeypatch.setattr(outbox, "BATCH", 1)
    assert outbox.poll(force=True) is True
    assert invalidation.is_pending("any:namespace:at:all")  # names beyond the look are unknown


def test_a_missing_outbox_table_never_breaks_a_write_or_a_request(
    real_shop, catalog, settings, caplog
):
    """Before ``migrate``: the write and the request go through; one warning says why."""
    from django.db import connection as db

    from drf_redis_toolkit.invalidation import outbox
    from drf_redis_toolkit.models import PendingInvalidation

    product = catalog.products[0]
    with db.schema_editor() as editor:
        editor.delete_model(PendingInvalidation)
    try:
        _redis_known_down(settings, real_shop)
        with caplog.at_level(logging.WARNING, logger="drf_redis_toolkit.invalidation"):
            with transaction.atomic():
                product.price = Decimal("55.00")
                product.save()  # the outbox insert fails inside a savepoint only
        assert Product.objects.get(pk=product.pk).price == Decimal("55.00")
        assert "no outbox table" in caplog.text
        assert invalidation.is_pending(f"product:{product.pk}")  # still kept in memory
        assert outbox.poll(force=True) is True  # skipped quietly, no exception
    finally:
        with db.schema_editor() as editor:
            editor.create_model(PendingInvalidation)
        outbox._tables.clear()
