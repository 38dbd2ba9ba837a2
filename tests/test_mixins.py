"""ProductCacheMixin / CartCacheMixin: names, canonical ids, write actions, per-user carts."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework import viewsets
from rest_framework.test import APIClient

from drf_redis_toolkit import invalidation
from drf_redis_toolkit.invalidation import cache_invalidated
from drf_redis_toolkit.mixins import CartCacheMixin
from tests.sample_fixtures import Generations

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gadgets(shop, settings):
    settings.ROOT_URLCONF = "tests.mixin_views"
    return shop


def status(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response["X-Cache"]


def test_entries_live_under_the_seed_names(gadgets, catalog):
    client = APIClient()
    product = catalog.products[0]
    category = product.category_id
    urls = {
        f"product:{product.pk}": f"/gadgets/{product.pk}/",
        f"category:{category}:products": f"/gadgets/?category={category}",
        "products:all": "/gadgets/",
    }
    for url in urls.values():
        assert (status(client, url), status(client, url)) == ("MISS", "HIT")
    for name, url in urls.items():
        invalidation.invalidate_now(namespaces=[name])
        assert status(client, url) == "MISS", name
        assert {n: status(client, u) for n, u in urls.items() if n != name} == {
            n: "HIT" for n in urls if n != name
        }


def test_ids_are_canonical_so_invalidation_reaches_every_spelling(gadgets, catalog):
    client = APIClient()
    product = catalog.products[0]
    odd_detail = f"/gadgets/0{product.pk}/"
    odd_list = f"/gadgets/?category=00{product.category_id}"
    for url in (odd_detail, odd_list):
        assert (status(client, url), status(client, url)) == ("MISS", "HIT")
    invalidation.invalidate_now(
        namespaces=[f"product:{product.pk}", f"category:{product.category_id}:products"]
    )
    assert (status(client, odd_detail), status(client, odd_list)) == ("MISS", "MISS")


def test_a_lookup_by_another_field_depends_on_the_list_namespace(gadgets, catalog):
    client = APIClient()
    url = f"/by-slug/{catalog.products[0].slug}/"
    assert (status(client, url), status(client, url)) == ("MISS", "HIT")
    invalidation.invalidate_now(namespaces=["products:all"])
    assert status(client, url) == "MISS"


def test_a_custom_write_action_invalidates_the_object_and_the_lists(gadgets, catalog, settings):
    settings.DRF_REDIS_TOOLKIT = {**gadgets.settings, "INVALIDATION": {}}  # the mixin alone
    client = APIClient()
    product = catalog.products[0]
    detail, listing = f"/gadgets/{product.pk}/", f"/gadgets/?category={product.category_id}"
    for url in (detail, listing, detail, listing):
        client.get(url)
    assert client.post(f"{detail}restock/").json() == {"stock": 15}
    assert client.get(detail).json()["stock"] == 15
    assert client.get(listing).json()["results"][0]["stock"] == 15


def test_a_custom_action_moving_an_object_invalidates_both_categories(gadgets, catalog, settings):
    settings.DRF_REDIS_TOOLKIT = {**gadgets.settings, "INVALIDATION": {}}
    books, games = catalog.categories
    product = catalog.products[0]
    gens = Generations([f"category:{books.pk}:products", f"category:{games.pk}:products"])
    response = APIClient().post(f"/gadgets/{product.pk}/move/", {"category": games.pk})
    assert response.status_code == 200
    assert gens.bumped() == set(gens.names)


def test_a_refused_write_invalidates_nothing(gadgets, catalog):
    gens = Generations(["products:all"])
    response = APIClient().post("/gadgets/", {"name": "no price"}, format="json")
    assert response.status_code == 400
    assert gens.bumped() == set()


def test_a_write_request_reaches_redis_once(gadgets, catalog):
    """The signal receivers' names and the mixin's are batched into one delivery."""
    sent = []

    def receiver(sender, namespaces, keys, **kwargs):
        sent.append(keys)

    cache_invalidated.connect(receiver, dispatch_uid="test-mixins-once")
    try:
        product = catalog.products[0]
        response = APIClient().patch(f"/gadgets/{product.pk}/", {"stock": 1}, format="json")
        assert response.status_code == 200
    finally:
        cache_invalidated.disconnect(dispatch_uid="test-mixins-once")
    assert len(sent) == 1
    assert {f"product:{product.pk}", "products:all"} <= sent[0]


def test_a_cart_view_cannot_share_its_cache():
    with pytest.raises(ImproperlyConfigured, match="cache_per_user"):

        class Shared(CartCacheMixin, viewsets.GenericViewSet):
            cache_per_user = False


def test_anonymous_requests_to_a_cart_view_are_never_cached(gadgets):
    client = APIClient()
    for _ in range(2):
        response = client.get("/open-cart/")
        assert response.status_code == 200
        assert "X-Cache" not in response


# -- a list is cached under a category's name only when it holds that category alone --------


def _price(listing, pk):
    return next(row["price"] for row in listing if row["id"] == pk)


def test_a_list_that_forgets_to_filter_is_not_stale_after_a_write_in_another_category(
    gadgets, catalog
):
    """``?category=1`` on a view serving every category must see a write in category 2."""
    client = APIClient()
    books, games = catalog.categories
    game = next(p for p in catalog.products if p.category_id == games.pk)
    url = f"/loose/?category={books.pk}"
    assert (status(client, url), status(client, url)) == ("MISS", "HIT")
    listed = client.get(url).json()
    assert {row["category"] for row in listed} == {books.pk, games.pk}  # unfiltered indeed
    # A write from the shell (the INVALIDATION rules) and one through the viewset.
    type(game).objects.filter(pk=game.pk).update(price="1.23")
    response = client.get(url)
    assert (response["X-Cache"], _price(response.json(), game.pk)) == ("MISS", "1.23")
    assert client.patch(f"/loose/{game.pk}/", {"price": "2.34"}, format="json").status_code == 200
    response = client.get(url)
    assert (response["X-Cache"], _price(response.json(), game.pk)) == ("MISS", "2.34")


def test_an_invalid_category_on_an_unfiltered_view_is_invalidated_by_any_write(gadgets, catalog):
    client = APIClient()
    product = catalog.products[0]
    url = "/loose/?category=not-a-number"
    assert (status(client, url), status(client, url)) == ("MISS", "HIT")
    type(product).objects.filter(pk=product.pk).update(price="3.21")
    response = client.get(url)
    assert (response["X-Cache"], _price(response.json(), product.pk)) == ("MISS", "3.21")


def test_a_filtered_list_keeps_its_fine_grained_invalidation(gadgets, catalog):
    client = APIClient()
    books, games = catalog.categories
    book = next(p for p in catalog.products if p.category_id == books.pk)
    game = next(p for p in catalog.products if p.category_id == games.pk)
    books_url, all_url = f"/gadgets/?category={books.pk}", "/gadgets/"
    for url in (books_url, all_url):
        assert (status(client, url), status(client, url)) == ("MISS", "HIT")
    type(game).objects.filter(pk=game.pk).update(price="4.56")
    assert (status(client, books_url), status(client, all_url)) == ("HIT", "MISS")
    type(book).objects.filter(pk=book.pk).update(price="6.54")
    response = client.get(books_url)
    assert response["X-Cache"] == "MISS"
    assert _price(response.json()["results"], book.pk) == "6.54"


def _restricted(queryset):
    from drf_redis_toolkit.mixins import _restricted_to

    return _restricted_to(queryset, "category")


def test_only_a_provable_restriction_to_one_category_counts():
    from catalog.models import Category, Product
    from django.db.models import Q

    objects = Product.objects
    assert _restricted(objects.filter(category=1)) == "1"
    assert _restricted(objects.filter(category_id="02").filter(price__gt=1)) == "2"
    assert _restricted(objects.filter(category__pk=3).order_by("-price")[:5]) == "3"
    assert _restricted(objects.filter(category=Category(pk=4))) == "4"
    assert _restricted(Category(pk=5).products.all()) == "5"
    for unproven in (
        objects.all(),
        objects.filter(category__in=[1]),
        objects.filter(Q(category=1) | Q(price=0)),
        objects.exclude(category=1),
        objects.filter(~Q(category=1)),
        objects.filter(category__slug="books"),
        objects.filter(category=1).filter(category=2),
        objects.filter(category=1).union(objects.filter(category=2)),
        objects.filter(category__isnull=False),
    ):
        assert _restricted(unproven) is None, unproven.query
