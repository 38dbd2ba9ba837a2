"""End-to-end tests of the sample API on a real Redis: every write path, then a read of new data.

Each write (staff PATCH, admin site, a shell in another process, delete,
category move, m2m change, ``QuerySet.update()``) is followed by reads that
must show it; a rolled-back write changes nothing; carts never cross users;
throttles answer 429 with headers; cached reads run no SQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from carts.models import Cart, CartItem
from catalog.models import Category, Product, Tag
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.sample_fixtures import apply_shop_settings, database_url, make_catalog

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def users():
    user_model = get_user_model()
    admin = user_model.objects.create_user("admin", password="admin-pass", is_staff=True)
    ann = user_model.objects.create_user("ann", password="pw")
    bob = user_model.objects.create_user("bob", password="pw")
    return {"admin": admin, "ann": ann, "bob": bob}


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def get(client: APIClient, url: str):
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response


def detail(product) -> str:
    return f"/api/products/{product.pk}/"


def in_list(response, product) -> dict | None:
    return next((row for row in response.json()["results"] if row["id"] == product.pk), None)


def warm(client: APIClient, *urls: str) -> None:
    """Read each URL twice: the second read must be a cache hit."""
    for url in urls:
        get(client, url)
        assert get(client, url)["X-Cache"] == "HIT", url


# -- caching ---------------------------------------------------------------------------


def test_product_list_miss_then_hit(shop, catalog):
    client = APIClient()
    first = get(client, "/api/products/")
    second = get(client, "/api/products/")
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    assert first.content == second.content
    assert first.json()["count"] == len(catalog.products)


def test_pages_and_filters_are_cached_apart(real_shop, catalog):
    client = APIClient()
    books = catalog.categories[0]
    page1 = get(client, "/api/products/?page_size=2")
    page2 = get(client, "/api/products/?page_size=2&page=2")
    assert page1.json()["results"] != page2.json()["results"]
    only_books = get(client, f"/api/products/?category={books.pk}")
    assert {row["category"] for row in only_books.json()["results"]} == {books.pk}
    assert get(client, f"/api/products/?category={books.pk}")["X-Cache"] == "HIT"
    assert client.get("/api/products/?category=abc").status_code == 400


def test_cached_reads_run_no_sql(real_shop, catalog):
    client = APIClient()
    product = catalog.products[0]
    urls = [
        "/api/products/",
        f"/api/products/?category={product.category_id}",
        detail(product),
        "/api/categories/",
    ]
    warm(client, *urls)
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            assert get(client, url)["X-Cache"] == "HIT"
        # The one query a hit may run is the toolkit's look at its outbox (a SELECT at
        # most every outbox.POLL_INTERVAL per process, docs/invalidation.md), never the view's.
        sql = [q["sql"] for q in queries.captured_queries if "pendinginvalidation" not in q["sql"]]
        assert sql == [], url


def test_an_uncached_list_runs_a_constant_number_of_queries(real_shop, settings):
    make_catalog(products_per_category=2)
    tags = list(Tag.objects.all())
    for product in Product.objects.all():
        product.tags.set(tags)

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = APIClient().get("/api/products/?page_size=100")
        assert response["X-Cache"] == "MISS"
        # Not the view's: the toolkit's rate-limited look at its outbox (docs/invalidation.md).
        return sum("pendinginvalidation" not in q["sql"] for q in queries.captured_queries)

    small = count_queries()
    category = Category.objects.first()
    Product.objects.bulk_create(
        [
            Product(name=f"extra {n}", slug=f"extra-{n}", price=1, stock=1, category=category)
            for n in range(60)
        ]
    )
    for product in Product.objects.filter(slug__startswith="extra-"):
        product.tags.set(tags)
    large = count_queries()
    # The page with its count (one statement: catalog/pagination.py), the tags
    # (prefetch_related): no N+1.
    assert small == large == 2


# -- every write path, then a read that shows it -------------------------------------


def test_staff_patch_is_seen_by_the_next_reads(real_shop, catalog, users):
    product = catalog.products[0]
    anyone = APIClient()
    urls = [detail(product), "/api/products/", f"/api/products/?category={product.category_id}"]
    warm(anyone, *urls)

    response = client_for(users["admin"]).patch(detail(product), {"price": "123.45"}, format="json")
    assert response.status_code == 200

    assert get(anyone, detail(product)).json()["price"] == "123.45"
    assert in_list(get(anyone, "/api/products/"), product)["price"] == "123.45"
    category_list = get(anyone, f"/api/products/?category={product.category_id}")
    assert in_list(category_list, product)["price"] == "123.45"


def test_only_staff_may_write_products(real_shop, catalog, users):
    product = catalog.products[0]
    assert APIClient().patch(detail(product), {"stock": 1}, format="json").status_code == 401
    denied = client_for(users["ann"]).patch(detail(product), {"stock": 1}, format="json")
    assert denied.status_code == 403


def test_an_admin_site_save_is_seen_by_the_next_read(real_shop, catalog, users):
    product = catalog.products[0]
    anyone = APIClient()
    warm(anyone, detail(product))
    admin_user = users["admin"]
    admin_user.is_superuser = True
    admin_user.save()
    browser = APIClient()
    browser.force_login(admin_user)
    response = browser.post(
        f"/admin/catalog/product/{product.pk}/change/",
        {
            "name": "Renamed in the admin",
            "slug": product.slug,
            "description": "",
            "price": "9.99",
            "stock": "7",
            "category": str(product.category_id),
            "tags": [str(tag.pk) for tag in product.tags.all()],
        },
        format="multipart",
    )
    assert response.status_code == 302, response.content[:2000]
    data = get(anyone, detail(product)).json()
    assert (data["name"], data["price"]) == ("Renamed in the admin", "9.99")


def test_a_save_from_a_shell_in_another_process_is_seen_by_the_next_read(real_shop, catalog):
    product = catalog.products[0]
    anyone = APIClient()
    warm(anyone, detail(product), "/api/products/")
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "DATABASE_URL": database_url(),
        "REDIS_URL": real_shop.server.url,
        "REDIS_KEY_PREFIX": "shop",
    }
    code = (
        "from catalog.models import Product; "
        f"p = Product.objects.get(pk={product.pk}); p.name = 'Saved in a shell'; p.save()"
    )
    shell = subprocess.run(
        [sys.executable, str(ROOT / "sample_api" / "manage.py"), "shell", "-c", code],
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert shell.returncode == 0, shell.stderr
    assert get(anyone, detail(product)).json()["name"] == "Saved in a shell"
    assert in_list(get(anyone, "/api/products/"), product)["name"] == "Saved in a shell"


def test_a_delete_is_seen_by_the_next_reads(real_shop, catalog, users):
    product = catalog.products[0]
    anyone = APIClient()
    warm(anyone, detail(product), "/api/products/")
    assert client_for(users["admin"]).delete(detail(product)).status_code == 204
    assert anyone.get(detail(product)).status_code == 404
    assert in_list(get(anyone, "/api/products/"), product) is None


def test_a_category_move_updates_both_category_lists(real_shop, catalog, users):
    books, games = catalog.categories
    product = catalog.products[0]
    assert product.category_id == books.pk
    anyone = APIClient()
    books_url, games_url = (f"/api/products/?category={c.pk}" for c in (books, games))
    warm(anyone, books_url, games_url, detail(product))

    response = client_for(users["admin"]).patch(
        detail(product), {"category": games.pk}, format="json"
    )
    assert response.status_code == 200

    assert in_list(get(anyone, books_url), product) is None
    assert in_list(get(anyone, games_url), product) is not None
    assert get(anyone, detail(product)).json()["category"] == games.pk


def test_an_orm_category_move_updates_both_category_lists(real_shop, catalog):
    books, games = catalog.categories
    product = Product.objects.get(pk=catalog.products[0].pk)
    anyone = APIClient()
    books_url, games_url = (f"/api/products/?category={c.pk}" for c in (books, games))
    warm(anyone, books_url, games_url)
    product.category = games
    product.save()
    assert in_list(get(anyone, books_url), product) is None
    assert in_list(get(anyone, games_url), product) is not None


def test_an_m2m_change_is_seen_by_the_next_read(real_shop, catalog, users):
    product = catalog.products[1]
    sale = Tag.objects.get(slug="sale")
    anyone = APIClient()
    warm(anyone, detail(product))
    product.tags.add(sale)
    assert get(anyone, detail(product)).json()["tags"] == ["sale"]
    sale.products.remove(product)  # from the other side
    assert get(anyone, detail(product)).json()["tags"] == []
    client_for(users["admin"]).patch(detail(product), {"tags": ["new", "sale"]}, format="json")
    assert sorted(get(anyone, detail(product)).json()["tags"]) == ["new", "sale"]


def test_a_queryset_update_through_the_opt_in_manager_is_seen(real_shop, catalog):
    books = catalog.categories[0]
    anyone = APIClient()
    urls = [f"/api/products/?category={books.pk}", *(detail(p) for p in catalog.products)]
    warm(anyone, *urls)
    Product.objects.filter(category=books).update(price=Decimal("1.23"))
    for row in get(anyone, f"/api/products/?category={books.pk}").json()["results"]:
        assert row["price"] == "1.23"
    for product in catalog.products:
        expected = "1.23" if product.category_id == books.pk else str(product.price)
        assert get(anyone, detail(product)).json()["price"] == expected


def test_a_rolled_back_write_changes_nothing(real_shop, catalog):
    product = catalog.products[0]
    anyone = APIClient()
    warm(anyone, detail(product))
    before = get(anyone, detail(product)).content
    with pytest.raises(RuntimeError), transaction.atomic():
        Product.objects.filter(pk=product.pk).update(name="never committed")
        product.name = "never committed"
        product.save()
        raise RuntimeError("roll back")
    response = get(anyone, detail(product))
    assert response["X-Cache"] == "HIT"  # still valid: nothing changed
    assert response.content == before


def test_the_seed_helpers_never_return_a_changed_product_or_cart(real_shop, catalog, users):
    """The seed's Examples 1 and 2 (catalog/services.py, carts/services.py)."""
    from carts.services import get_user_cart, update_cart_item
    from catalog.services import get_product_detail

    product = catalog.products[0]
    assert get_product_detail(product.pk)["name"] == product.name
    Product.objects.filter(pk=product.pk).update(name="Changed")
    assert get_product_detail(product.pk)["name"] == "Changed"

    ann = users["ann"]
    update_cart_item(ann.pk, product.pk, 2)
    assert get_user_cart(ann.pk)["items"][0]["quantity"] == 2
    update_cart_item(ann.pk, product.pk, 5)
    assert get_user_cart(ann.pk)["items"][0]["quantity"] == 5
    update_cart_item(ann.pk, product.pk, 0)
    assert get_user_cart(ann.pk)["items"] == []


# -- carts -------------------------------------------------------------------------------


def test_ids_beyond_64_bits_are_400_or_404_on_every_django(real_shop, catalog, users):
    """Django < 5.0 raises OverflowError on SQLite for such ids; the sample answers 4xx."""
    huge = 2**70
    anyone, ann, admin = APIClient(), client_for(users["ann"]), client_for(users["admin"])
    assert anyone.get(f"/api/products/{huge}/").status_code == 404
    assert anyone.get(f"/api/categories/{huge}/").status_code == 404
    assert anyone.get(f"/api/products/?category={huge}").status_code == 400
    assert anyone.get("/api/products/?page=855802960716872192").status_code == 404
    assert anyone.get(f"/api/products/?page={huge}&page_size=-5").status_code == 404
    assert ann.get(f"/api/cart/items/{huge}/").status_code == 404
    added = ann.post("/api/cart/items/", {"product": huge}, format="json")
    assert added.status_code == 400 and "product" in added.json()
    moved = admin.patch(detail(catalog.products[0]), {"category": -huge}, format="json")
    assert moved.status_code == 400 and "category" in moved.json()


def test_carts_never_cross_users(real_shop, catalog, users):
    ann, bob = client_for(users["ann"]), client_for(users["bob"])
    first, second = catalog.products[0], catalog.products[1]
    assert ann.post("/api/cart/items/", {"product": first.pk}, format="json").status_code == 201
    assert bob.post("/api/cart/items/", {"product": second.pk}, format="json").status_code == 201

    for _ in range(2):  # a miss, then a hit: neither ever shows the other's cart
        ann_cart = get(ann, "/api/cart/").json()
        bob_cart = get(bob, "/api/cart/").json()
        assert [i["product"] for i in ann_cart["items"]] == [first.pk]
        assert [i["product"] for i in bob_cart["items"]] == [second.pk]
    assert get(ann, "/api/cart/")["X-Cache"] == "HIT"
    assert "Authorization" in get(ann, "/api/cart/")["Vary"]

    ann_item = CartItem.objects.get(cart__user=users["ann"])
    assert bob.get(f"/api/cart/items/{ann_item.pk}/").status_code == 404
    assert bob.patch(f"/api/cart/items/{ann_item.pk}/", {"quantity": 3}).status_code == 404
    assert bob.delete(f"/api/cart/items/{ann_item.pk}/").status_code == 404
    assert APIClient().get("/api/cart/").status_code == 401
    assert [i["product"] for i in get(ann, "/api/cart/").json()["items"]] == [first.pk]


def test_cart_writes_are_seen_by_the_next_cart_read(real_shop, catalog, users):
    ann = client_for(users["ann"])
    product = catalog.products[0]
    empty = get(ann, "/api/cart/").json()
    assert (empty["id"], empty["items"]) == (None, [])
    assert get(ann, "/api/cart/")["X-Cache"] == "HIT"

    added = ann.post("/api/cart/items/", {"product": product.pk, "quantity": 2}, format="json")
    assert added.status_code == 201
    assert get(ann, "/api/cart/").json()["total_quantity"] == 2

    merged = ann.post("/api/cart/items/", {"product": product.pk, "quantity": 1}, format="json")
    assert (merged.status_code, merged.json()["quantity"]) == (200, 3)
    assert get(ann, "/api/cart/").json()["total_quantity"] == 3

    item_url = f"/api/cart/items/{added.json()['id']}/"
    assert ann.patch(item_url, {"quantity": 4}, format="json").status_code == 200
    assert get(ann, "/api/cart/").json()["items"][0]["quantity"] == 4
    assert ann.patch(item_url, {"quantity": 99}, format="json").status_code == 400  # stock 5

    assert ann.delete(item_url).status_code == 204
    assert get(ann, "/api/cart/").json()["items"] == []


def test_a_price_change_shows_in_every_cart_holding_the_product(real_shop, catalog, users):
    product = catalog.products[0]
    ann = client_for(users["ann"])
    added = ann.post("/api/cart/items/", {"product": product.pk, "quantity": 2}, format="json")
    assert added.status_code == 201
    warm(ann, "/api/cart/")
    changed = client_for(users["admin"]).patch(detail(product), {"price": "50.00"}, format="json")
    assert changed.status_code == 200
    cart = get(ann, "/api/cart/").json()
    assert (cart["items"][0]["unit_price"], cart["total_price"]) == ("50.00", "100.00")


def test_a_cart_deleted_with_its_user_is_invalidated(real_shop, catalog, users):
    ann = client_for(users["ann"])
    added = ann.post("/api/cart/items/", {"product": catalog.products[0].pk}, format="json")
    assert added.status_code == 201
    warm(ann, "/api/cart/")
    assert len(get(ann, "/api/cart/").json()["items"]) == 1  # cached with the item
    Cart.objects.filter(user=users["ann"]).delete()
    assert get(ann, "/api/cart/").json()["items"] == []


# -- throttles ------------------------------------------------------------------------------


def test_throttles_answer_429_with_headers(real_shop, catalog, users, settings):
    apply_shop_settings(settings, real_shop, anon="3/min", cart_write="2/min")
    anyone = APIClient()
    for _ in range(3):
        response = anyone.get("/api/products/")
        assert response.status_code == 200
        assert "X-RateLimit-Remaining" in response and "RateLimit" in response
    refused = anyone.get("/api/products/")  # a cache hit is no way around a throttle
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert refused["X-RateLimit-Remaining"] == "0"

    ann = client_for(users["ann"])
    body = {"product": catalog.products[0].pk}
    assert ann.post("/api/cart/items/", body, format="json").status_code == 201
    assert ann.post("/api/cart/items/", body, format="json").status_code == 200
    refused = ann.post("/api/cart/items/", body, format="json")
    assert refused.status_code == 429
    assert "cart_write" in refused["RateLimit-Policy"]
    assert ann.get("/api/cart/").status_code == 200  # reads are not cart writes


def test_popular_products_count_cache_hits_too(real_shop, catalog):
    anyone = APIClient()
    first, second = catalog.products[0], catalog.products[1]
    for _ in range(3):
        get(anyone, detail(first))
    get(anyone, detail(second))
    ranking = get(anyone, "/api/products/popular/").json()
    assert [(row["id"], row["views"]) for row in ranking] == [(first.pk, 3), (second.pk, 1)]
    assert "X-Cache" not in get(anyone, "/api/products/popular/")


def test_a_product_that_does_not_exist_is_never_counted_as_viewed(real_shop, catalog):
    """Any id in the URL used to be counted before the answer, as the URL spelt it:
    requests for missing ids, or for one id spelt with leading zeros, grew the day's
    ranking without end (and could crowd real products out)."""
    anyone = APIClient()
    product = catalog.products[0]
    missing = max(p.pk for p in catalog.products) + 1000
    assert anyone.get(f"/api/products/{missing}/").status_code == 404
    # Other spellings of the same id find the same product: one product, one member.
    for path in (
        detail(product),
        f"/api/products/0{product.pk}/",
        f"/api/products/00{product.pk}/",
    ):
        get(anyone, path)
    ranking = get(anyone, "/api/products/popular/").json()
    assert [(row["id"], row["views"]) for row in ranking] == [(product.pk, 3)]
    raw = real_shop.raw
    members = [
        m for key in raw.scan_iter(match=b"*:popular:{pv}:*") for m in raw.zrange(key, 0, -1)
    ]
    assert members == [str(product.pk).encode()]


# -- seed_demo ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_seed_demo_creates_10000_products_in_batches_and_is_idempotent(real_shop, capsys):
    """Rows go in with bulk inserts: the number of statements, not the seconds, is asserted."""
    with CaptureQueriesContext(connection) as first:
        call_command("seed_demo", products=10_000, users=5)
    inserts = [q for q in first.captured_queries if q["sql"].startswith("INSERT")]
    print(f"seed_demo --products 10000 --users 5: {len(first)} statements, {len(inserts)} inserts")
    assert len(first) < 1_000, len(first)  # not one statement per product
    counts = (Product.objects.count(), Category.objects.count(), Cart.objects.count())
    with CaptureQueriesContext(connection) as again:
        call_command("seed_demo", products=10_000, users=5)
    assert (Product.objects.count(), Category.objects.count(), Cart.objects.count()) == counts
    assert not [q for q in again.captured_queries if q["sql"].startswith("INSERT")]
    assert counts[0] == 10_000

    token = APIClient().post(
        "/api/auth/token/", {"username": "demo5", "password": "demo-pass"}, format="json"
    )
    assert token.status_code == 200
    admin_token = APIClient().post(
        "/api/auth/token/", {"username": "admin", "password": "admin-pass"}, format="json"
    )
    assert admin_token.status_code == 200
    assert get_user_model().objects.get(username="admin").is_staff
    page = get(APIClient(), "/api/products/?page=500").json()
    assert page["count"] == 10_000 and len(page["results"]) == 20
