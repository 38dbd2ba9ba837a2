"""The exact names of every key the toolkit writes, and the exact meaning of every rate string.

Key names are a stored format: a release that renamed a throttle's key would
forget every client's history (and let each one through again), and one that
moved a key out of its hash tag would break the one-script-per-slot rule on a
cluster. So the shapes are pinned here character by character, with the
digests worked out independently (``hashlib``), not with ``keys.digest``.
Rates are the throttles' configuration: what each unit, multiplier and bound
means is pinned, and so is each error. Pure functions: no Redis needed.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from django.core.exceptions import ImproperlyConfigured

from drf_redis_toolkit import keys
from drf_redis_toolkit.rates import MAX_LIMIT, MAX_WINDOW_SECONDS, Limit, parse_rate


def blake(data: bytes, size: int) -> str:
    return hashlib.blake2b(data, digest_size=size).hexdigest()


@pytest.fixture
def prefix(settings):
    settings.DRF_REDIS_TOOLKIT = {"KEY_PREFIX": "shop"}
    return "shop"


# -- keys.py -------------------------------------------------------------------------


def test_digest_is_blake2b_of_the_utf8_text_at_the_asked_size():
    assert keys.digest("ip:203.0.113.9") == blake(b"ip:203.0.113.9", 16)
    assert keys.digest(b"raw bytes", 4) == blake(b"raw bytes", 4)
    assert len(keys.digest("x")) == 32 and len(keys.digest("x", 8)) == 16
    # A lone surrogate (from a badly decoded header) is still hashed, not an error.
    assert keys.digest("bad\udcff") == blake("bad\udcff".encode("utf-8", "surrogatepass"), 16)


def test_safe_part_keeps_plain_names_and_hashes_everything_else():
    assert keys.safe_part("anon") == "anon"
    assert keys.safe_part("Burst_1.v-2") == "Burst_1.v-2"
    assert keys.safe_part("a" * 64) == "a" * 64
    for odd in ("a" * 65, "", "a:b", "{tag}", "sc*pe", "naïve", "a b"):
        assert keys.safe_part(odd) == "h" + blake(odd.encode(), 8), odd


def test_client_keys_and_stripping_the_prefix(prefix):
    assert keys.prefix() == "shop"
    assert keys.client_key("product:1") == "shop:product:1"
    assert keys.strip_prefix("shop:product:1") == "product:1"
    assert keys.strip_prefix(b"shop:product:1") == "product:1"
    # Only the whole prefix and its colon are stripped.
    assert keys.strip_prefix("shopping:x") == "shopping:x"
    assert keys.strip_prefix("shop") == "shop"
    assert keys.strip_prefix("other:shop:x") == "other:shop:x"
    # Bytes that are not UTF-8 are replaced, not an error (SCAN returns whatever is stored).
    assert keys.strip_prefix(b"shop:\xff1") == "\ufffd1"


def test_escape_glob_escapes_each_glob_character_once():
    assert keys.escape_glob("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert keys.escape_glob("plain:1") == "plain:1"


def test_throttle_keys_share_the_identity_hash_tag(prefix):
    ident = "user:42"
    tag = blake(ident.encode(), 16)
    assert keys.throttle_key("sw", "anon", ident) == f"shop:sw:anon:{{{tag}}}"
    assert keys.throttle_key("swc", "a:b", ident) == (f"shop:swc:h{blake(b'a:b', 8)}:{{{tag}}}")
    assert keys.throttle_identity(keys.throttle_key("sw", "anon", ident)) == tag


def test_the_popular_products_keys(prefix):
    assert keys.popular_products_key(20123) == "shop:popular:{pv}:20123"
    assert keys.popular_products_scratch_key("ab12") == "shop:popular:{pv}:tmp:ab12"


def test_cache_keys_share_the_namespace_hash_tag(prefix):
    material = "GET /products/?page=2 json en"
    tail = blake(material.encode(), 16)
    assert keys.namespace_tag("products") == "{products}"
    assert keys.namespace_tag("a{b}") == "{h" + blake(b"a{b}", 8) + "}"
    assert keys.generation_key("products") == "shop:gen:{products}"
    assert keys.generation_pattern() == "shop:gen:*"
    entry = keys.cache_entry_key("products", material)
    assert entry == f"shop:c:{{products}}:{tail}"
    assert keys.cache_lock_key(entry) == f"shop:cl:{{products}}:{tail}"
    assert keys.cache_keys("products", material) == (
        "shop:gen:{products}",
        entry,
        f"shop:cl:{{products}}:{tail}",
    )
    assert keys.cache_stats_key() == "shop:cstats"


# -- rates.py ------------------------------------------------------------------------


def test_every_unit_and_multiplier():
    expected = {
        "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
        "h": 3600, "hour": 3600, "d": 86400, "day": 86400,
    }  # fmt: skip
    for unit, seconds in expected.items():
        assert parse_rate(f"7/{unit}") == (Limit(7, seconds),), unit
        assert parse_rate(f"7/{unit.upper()}") == (Limit(7, seconds),), unit
    assert parse_rate(" 5 / 10 s ") == (Limit(5, 10),)
    assert parse_rate("5/1min") == (Limit(5, 60),)


def test_several_limits_sorted_by_window_then_limit_without_duplicates():
    assert parse_rate("1000/day,10/s,100/min,10/s") == (
        Limit(10, 1),
        Limit(100, 60),
        Limit(1000, 86400),
    )
    assert parse_rate("20/min,10/min") == (Limit(10, 60), Limit(20, 60))


def test_the_bounds_of_counts_and_windows():
    assert parse_rate(f"{MAX_LIMIT}/s") == (Limit(MAX_LIMIT, 1),)
    assert parse_rate(f"1/{MAX_WINDOW_SECONDS}s") == (Limit(1, MAX_WINDOW_SECONDS),)
    assert parse_rate("1/366d") == (Limit(1, 366 * 86400),)
    for bad, words in [
        (f"{MAX_LIMIT + 1}/s", "count in rate"),
        ("0/s", "count in rate"),
        (f"1/{MAX_WINDOW_SECONDS + 1}s", "window of rate"),
        ("1/367d", "window of rate"),
        ("1/0s", "window of rate"),
    ]:
        with pytest.raises(ImproperlyConfigured, match=words):
            parse_rate(bad, setting="MY_RATE")


def test_errors_name_the_setting_the_rate_and_the_units():
    with pytest.raises(ImproperlyConfigured) as malformed:
        parse_rate("lots/min", setting="MY_RATE")
    assert str(malformed.value) == (
        "MY_RATE: malformed rate 'lots/min'; expected '<n>/<unit>' or '<n>/<k><unit>' "
        "with unit one of s, sec, second, m, min, minute, h, hour, d, day"
    )
    with pytest.raises(ImproperlyConfigured) as unknown:
        parse_rate("100/month", setting="MY_RATE")
    assert str(unknown.value) == (
        "MY_RATE: unknown unit 'month' in rate '100/month'; "
        "use one of s, sec, second, m, min, minute, h, hour, d, day"
    )
    with pytest.raises(ImproperlyConfigured, match=r"^rate: rate 100 must be a string"):
        parse_rate(100)
    with pytest.raises(ImproperlyConfigured, match=r"^MY_RATE: window of rate '1/0s' must be "):
        parse_rate("1/0s", setting="MY_RATE")
    with pytest.raises(ImproperlyConfigured, match=r"^MY_RATE: count in rate '0/s' must be "):
        parse_rate("0/s", setting="MY_RATE")


def test_a_limit_prints_and_converts_its_window():
    assert str(Limit(5, 60)) == "5/60s"
    assert Limit(5, 60).window_ms == 60_000


@pytest.mark.parametrize("slot", [0, 1, 5461, 10923, 16383])
def test_a_slot_probe_key_lands_in_its_slot(prefix, slot):
    """``LOCAL_CACHE``'s heartbeat reads it on a master: it must hash to that master's slot."""
    from redis.crc import key_slot

    from drf_redis_toolkit.keys import slot_probe_key

    key = slot_probe_key(slot)
    assert key_slot(key.encode()) == slot
    assert re.fullmatch(r"shop:probe:\{\d+\}", key), key
    tag = key[key.index("{") + 1 : -1]
    assert all(key_slot(str(n).encode()) != slot for n in range(int(tag)))  # the smallest
