"""``redis_client``: the seed guide's Basic Operations and Quick Reference, on every backend."""

from __future__ import annotations

import datetime
import decimal
import time
import uuid

import pytest

from drf_redis_toolkit import client as client_module
from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.client import (
    cache_product,
    cache_user_cart,
    get_cached_cart,
    get_cached_product,
    get_popular_products,
    invalidate_user_cache,
    redis_client,
    track_product_view,
)


def test_set_and_get_values_as_in_the_seed(backend):
    redis_client.set("test_key", "Hello Redis!")
    assert redis_client.get("test_key") == "Hello Redis!"

    redis_client.set("username", "john_doe", timeout=300)
    assert redis_client.get("username") == "john_doe"

    user_data = {"id": 1, "name": "John", "email": "john@example.com"}
    redis_client.set("user:1", user_data, timeout=600)
    assert redis_client.get("user:1") == user_data

    items = ["apple", "banana", "orange"]
    redis_client.set("fruits", items, timeout=300)
    assert redis_client.get("fruits") == items


def test_keys_are_stored_under_the_prefix_verbatim(backend):
    redis_client.set("user:1", {"id": 1})
    assert backend.raw.get("drt:user:1") == b'{"id":1}'
    assert backend.raw.get("user:1") is None


def test_custom_prefix(backend, settings):
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "KEY_PREFIX": "shop"}
    redis_client.set("k", 1)
    assert backend.raw.get("shop:k") == b"1"


def test_delete_and_exists(backend):
    redis_client.set("username", "john_doe")
    assert redis_client.exists("username") is True
    assert redis_client.delete("username") == 1
    assert redis_client.exists("username") is False
    assert redis_client.delete("username") == 0
    redis_client.set("a", 1)
    redis_client.set("b", 2)
    assert redis_client.delete("a", "b", "c") == 2


def test_increment_counter(backend):
    assert redis_client.incr("product:123:views") == 1
    assert redis_client.incr("product:123:views", amount=5) == 6
    assert redis_client.get("product:123:views") == 6


def test_expiration_and_ttl(backend):
    redis_client.set("permanent_key", "value", timeout=None)
    assert redis_client.get_ttl("permanent_key") is None
    assert redis_client.expire("permanent_key", 3600) is True
    assert 3590 <= redis_client.get_ttl("permanent_key") <= 3600
    assert redis_client.get_ttl("no-such-key") == 0
    assert redis_client.expire("no-such-key", 10) is False


def test_default_timeout_comes_from_settings(backend, settings):
    redis_client.set("k", 1)
    assert 290 <= redis_client.get_ttl("k") <= 300
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "CACHE_DEFAULT_TIMEOUT": 42}
    redis_client.set("k", 1)
    assert 40 <= redis_client.get_ttl("k") <= 42


def test_get_default_and_missing(backend):
    assert redis_client.get("missing") is None
    assert redis_client.get("missing", default="x") == "x"


def test_falsy_values_round_trip(backend):
    for value in (0, "", [], {}, False):
        redis_client.set("falsy", value)
        assert redis_client.get("falsy", default="MISSING") == value


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), float("nan"), b"bytes"],
    ids=["set", "object", "nan", "bytes"],
)
def test_values_json_cannot_encode_raise_type_error_naming_the_key(backend, value):
    with pytest.raises(TypeError, match="'bad:key'"):
        redis_client.set("bad:key", value)
    assert redis_client.exists("bad:key") is False


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (decimal.Decimal("19.99"), "19.99"),
        (datetime.date(2020, 1, 2), "2020-01-02"),
        (datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC), "2020-01-02T03:04:05Z"),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        (datetime.timedelta(seconds=90), "P0DT00H01M30S"),
    ],
    ids=["decimal", "date", "datetime", "uuid", "timedelta"],
)
def test_model_field_values_are_stored_as_django_json_strings(backend, value, stored):
    """What a model instance holds can be cached as it is; it comes back as a string."""
    redis_client.set("typed", {"v": value, "nested": [value]})
    assert redis_client.get("typed") == {"v": stored, "nested": [stored]}
    redis_client.set_many({"m": value})
    assert redis_client.get_many(["m"]) == {"m": stored}


def test_type_error_on_set_many_names_the_key(backend):
    with pytest.raises(TypeError, match="'b'"):
        redis_client.set_many({"a": 1, "b": object()})
    assert redis_client.get_many(["a", "b"]) == {}


def test_get_many_and_set_many(backend):
    redis_client.set_many({"p:1": {"id": 1}, "p:2": {"id": 2}}, timeout=60)
    assert redis_client.get_many(["p:1", "p:2", "p:3"]) == {"p:1": {"id": 1}, "p:2": {"id": 2}}
    assert 50 <= redis_client.get_ttl("p:1") <= 60
    assert redis_client.get_many([]) == {}


def test_clear_pattern_scans_under_the_prefix_only(backend):
    for pid in range(30):
        redis_client.set(f"product:{pid}", {"id": pid})
    redis_client.set("cart:user:1", {"items": []})
    backend.raw.set("product:outside-prefix", b"x")
    assert redis_client.clear_pattern("product:*") == 30
    assert redis_client.exists("cart:user:1")
    assert backend.raw.get("product:outside-prefix") == b"x"
    assert redis_client.clear_pattern("product:*") == 0


def test_clear_pattern_in_batches_larger_than_one_scan(backend):
    redis_client.set_many({f"bulk:{i}": i for i in range(1200)})
    assert redis_client.clear_pattern("bulk:*") == 1200
    assert redis_client.get_many([f"bulk:{i}" for i in range(5)]) == {}


def test_seed_clear_cache_patterns(backend):
    redis_client.set("session:user:123:prefs", 1)
    redis_client.set("x:user:123:y", 1)
    redis_client.set("x:user:1234:y", 1)
    assert redis_client.clear_pattern("*:user:123:*") == 2
    assert redis_client.exists("x:user:1234:y")


def test_ping(backend):
    assert redis_client.ping() is True


def reset_server_stats(backend, why: str) -> None:
    """CONFIG RESETSTAT on every node (real servers only: fakeredis keeps no statistics)."""
    if not backend.is_real:
        pytest.skip(why)
    if backend.name == "cluster":
        backend.raw.config_resetstat(target_nodes=backend.raw.ALL_NODES)
    else:
        backend.raw.config_resetstat()


def test_stats_has_the_seed_figures(backend):
    reset_server_stats(backend, "fakeredis keeps no keyspace hit/miss statistics")
    redis_client.set("k", 1)
    redis_client.get("k")
    redis_client.get("k")
    redis_client.get("k")
    redis_client.get("missing")
    stats = redis_client.stats()
    assert set(stats) >= {
        "total_connections",
        "total_commands",
        "keyspace_hits",
        "keyspace_misses",
        "hit_rate",
    }
    assert (stats["keyspace_hits"], stats["keyspace_misses"]) == (3, 1)
    assert stats["hit_rate"] == 75.0


def test_raw_client_is_exposed(backend):
    redis_client.set("k", "v")
    assert redis_client.client.get("drt:k") == b'"v"'


def test_seed_helpers(backend):
    product_data = {"id": 7, "name": "Lamp", "price": "9.99", "stock": 3, "description": "x"}
    cache_product(7, product_data, timeout=600)
    assert get_cached_product(7) == product_data
    assert 590 <= redis_client.get_ttl("product:7") <= 600
    assert get_cached_product(8) is None

    cart = {"cart_id": 1, "total_items": 0, "items": []}
    cache_user_cart(5, cart, timeout=1800)
    assert get_cached_cart(5) == cart
    redis_client.set("session:user:5", {"last_viewed_products": [1]})
    redis_client.set("x:user:5:y", 1)
    redis_client.set("session:user:6", {"keep": True})
    invalidate_user_cache(5)
    assert get_cached_cart(5) is None
    assert redis_client.get("session:user:5") is None
    assert redis_client.exists("x:user:5:y") is False
    assert redis_client.get("session:user:6") == {"keep": True}


def test_popular_products_most_viewed_first(backend):
    for product_id, views in ((1, 3), (2, 5), (3, 1)):
        for _ in range(views):
            track_product_view(product_id)
    assert get_popular_products(limit=2) == [(2, 5), (1, 3)]
    assert get_popular_products() == [(2, 5), (1, 3), (3, 1)]
    assert get_popular_products(limit=0) == []


def test_a_view_is_counted_once_and_its_day_kept_past_the_window(backend):
    assert track_product_view(7) == 1
    assert track_product_view("7") == 2
    assert track_product_view(8) == 1
    key = keyspace.popular_products_key(client_module._today())
    assert backend.raw.zscore(key, "7") == 2
    lifetime = (client_module.POPULAR_DAYS + 1) * 86400
    assert lifetime - 60 <= backend.raw.ttl(key) <= lifetime


def test_a_view_is_counted_in_one_round_trip(backend):
    """A detail view counts on every request, cache hits included: one call, no pipeline."""
    from tests.test_throttle_round_trips import changes, commands, node_clients

    if not backend.is_real:
        pytest.skip("counts what a real server executed (INFO commandstats)")
    track_product_view(1)  # the script is loaded on the node that owns today's key
    clients = node_clients(backend)
    try:
        before = commands(clients)
        track_product_view(1)
        sent = changes(before, commands(clients))
    finally:
        for client in clients:
            client.close()
    # ZINCRBY and EXPIRE are what the script ran inside the server.
    assert sent == {"evalsha": 1, "zincrby": 1, "expire": 1}, sent


def test_popular_products_span_seven_days(backend, monkeypatch):
    today = client_module._today()
    monkeypatch.setattr(client_module, "_today", lambda: today - 3)
    track_product_view(10)
    track_product_view(10)
    monkeypatch.setattr(client_module, "_today", lambda: today - 8)
    for _ in range(5):
        track_product_view(11)  # older than the window: not counted
    monkeypatch.setattr(client_module, "_today", lambda: today)
    track_product_view(12)
    assert get_popular_products() == [(10, 2), (12, 1)]


def test_popular_products_never_uses_keys(backend):
    """The seed scanned with KEYS; the toolkit must not (it blocks Redis)."""
    reset_server_stats(backend, "COMMANDSTATS is only meaningful on a real server")
    track_product_view(1)
    get_popular_products()
    redis_client.clear_pattern("*")
    stats = backend.raw.info("commandstats")
    if backend.name == "cluster":
        stats = {k: v for node in stats.values() for k, v in node.items()}
    assert "cmdstat_keys" not in stats


def test_expired_keys_disappear_on_a_real_server(real_backend):
    redis_client.set("short", 1, timeout=1)
    assert redis_client.exists("short")
    deadline = time.monotonic() + 3
    while redis_client.exists("short") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.exists("short") is False
    assert redis_client.get_ttl("short") == 0


def test_get_or_set_computes_once_then_serves_the_cache(backend):
    calls = []

    def compute():
        calls.append(1)
        return {"id": 7}

    assert redis_client.get_or_set("product:7", compute, timeout=60) == {"id": 7}
    assert redis_client.get_or_set("product:7", compute, timeout=60) == {"id": 7}
    assert len(calls) == 1
    assert 50 <= redis_client.get_ttl("product:7") <= 60
    assert redis_client.get_or_set("missing", lambda: None) is None
    assert redis_client.exists("missing") is False
    redis_client.set("falsy", 0)
    assert redis_client.get_or_set("falsy", lambda: 1) == 0  # a cached falsy value is a hit


def test_get_or_set_drops_a_value_invalidated_while_it_was_computed(backend):
    from drf_redis_toolkit.generations import bump_generations

    def compute_racing_a_writer():
        value = {"price": "old"}  # read from the database ...
        bump_generations("product:8")  # ... then a writer commits and invalidates
        return value

    assert redis_client.get_or_set("product:8", compute_racing_a_writer) == {"price": "old"}
    assert redis_client.exists("product:8") is False  # the possibly stale copy is gone
    assert redis_client.get_or_set("product:8", lambda: {"price": "new"}) == {"price": "new"}
    assert redis_client.get("product:8") == {"price": "new"}


def test_get_or_set_computes_while_redis_is_down(redis_server):
    from django.test import override_settings

    from tests import servers

    server = servers.start_redis()
    url = server.url
    server.stop()
    with override_settings(DRF_REDIS_TOOLKIT={"REDIS_URL": url}):
        assert redis_client.get_or_set("k", lambda: 42) == 42
