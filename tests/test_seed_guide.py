"""The seed guide's examples, line for line, against every backend.

The only change from the guide is the import: ``backend.redis_client`` becomes
``drf_redis_toolkit.client``.
"""

from __future__ import annotations

import os
import textwrap

import pytest

BASIC_OPERATIONS = """
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.client import (
    cache_product,
    get_cached_product,
    cache_user_cart,
    get_cached_cart
)

# Test connection
assert redis_client.ping() is True
redis_client.set('test_key', 'Hello Redis!')
assert redis_client.get('test_key') == 'Hello Redis!'

# Simple string
redis_client.set('username', 'john_doe', timeout=300)  # 5 minutes
value = redis_client.get('username')
assert value == 'john_doe'

# Dictionary (auto JSON serialization)
user_data = {'id': 1, 'name': 'John', 'email': 'john@example.com'}
redis_client.set('user:1', user_data, timeout=600)  # 10 minutes
cached_user = redis_client.get('user:1')
assert cached_user == user_data

# List
items = ['apple', 'banana', 'orange']
redis_client.set('fruits', items, timeout=300)
cached_items = redis_client.get('fruits')
assert cached_items == items

# Delete a key
redis_client.delete('username')

# Check if key exists
if redis_client.exists('user:1'):
    print("User data is cached")
else:
    raise AssertionError("User data not found in cache")

# Track page views
redis_client.incr('product:123:views')  # Increment by 1
redis_client.incr('product:123:views', amount=5)  # Increment by 5
views = redis_client.get('product:123:views')
assert views == 6

# Set a value without expiration
redis_client.set('permanent_key', 'value', timeout=None)
assert redis_client.get_ttl('permanent_key') is None
# Add expiration later (3600 seconds = 1 hour)
redis_client.expire('permanent_key', 3600)
ttl = redis_client.get_ttl('permanent_key')  # Returns seconds remaining
assert 3590 <= ttl <= 3600
"""

QUICK_REFERENCE = """
from drf_redis_toolkit.client import redis_client

redis_client.set('key', 'value', 300)
assert redis_client.get('key') == 'value'
assert redis_client.delete('key') == 1
assert redis_client.exists('key') is False
assert redis_client.incr('counter') == 1
redis_client.set('key', 'value', 300)
assert redis_client.expire('key', 3600) is True
assert 3590 <= redis_client.get_ttl('key') <= 3600
redis_client.set('user:1', {'id': 1})
assert redis_client.clear_pattern('user:*') == 1
assert redis_client.ping() is True
"""

SESSION_DATA = """
from drf_redis_toolkit.client import redis_client

def store_user_session_data(user_id, session_data):
    key = f'session:user:{user_id}'
    redis_client.set(key, session_data, timeout=3600)  # 1 hour

def get_user_session_data(user_id):
    key = f'session:user:{user_id}'
    return redis_client.get(key)

session_data = {
    'last_viewed_products': [1, 5, 10, 23],
    'current_category': 'electronics',
    'search_history': ['iphone', 'macbook', 'ipad']
}
store_user_session_data(user_id=1, session_data=session_data)
assert get_user_session_data(1) == session_data
"""

BEST_PRACTICES = """
from drf_redis_toolkit.client import redis_client

stock_count = 7
product_data = {'id': 123}
categories = ['a', 'b']
otp_code = '123456'
redis_client.set('stock:product:123', stock_count, timeout=60)  # 1 minute
redis_client.set('product:123', product_data, timeout=600)  # 10 minutes
redis_client.set('category:list', categories, timeout=3600)  # 1 hour
redis_client.set('otp:user:123', otp_code, timeout=300)  # 5 minutes

redis_client.set('x:user:123:y', 1)
# Clear all user-related cache
assert redis_client.clear_pattern('*:user:123:*') == 1
# Clear all product cache
assert redis_client.clear_pattern('product:*') == 1
# Clear all cart cache
redis_client.clear_pattern('cart:*')
"""

MONITORING = """
from drf_redis_toolkit.client import redis_client

def get_cache_stats():
    return redis_client.stats()

stats = get_cache_stats()
assert (stats['keyspace_hits'], stats['keyspace_misses'], stats['hit_rate']) == (1, 1, 50.0)
assert {'total_connections', 'total_commands', 'keyspace_hits', 'keyspace_misses'} <= set(stats)
"""

POPULAR_PRODUCTS = """
from drf_redis_toolkit.client import track_product_view, get_popular_products

for product_id in (1, 2, 2, 3, 2, 1):
    track_product_view(product_id)
assert get_popular_products(limit=2) == [(2, 3), (1, 2)]
"""


def run(source: str) -> None:
    exec(compile(textwrap.dedent(source), "<seed guide>", "exec"), {})


def test_basic_operations(backend):
    run(BASIC_OPERATIONS)


def test_quick_reference(backend):
    run(QUICK_REFERENCE)


def test_session_data(backend):
    run(SESSION_DATA)


def test_best_practices(backend):
    run(BEST_PRACTICES)


def test_monitoring(backend):
    if backend.name != "real":
        pytest.skip("hit statistics need one real server (fakeredis keeps none; a cluster sums)")
    from drf_redis_toolkit.client import redis_client

    backend.raw.config_resetstat()
    redis_client.set("k", 1)
    redis_client.get("k")  # one hit
    redis_client.get("missing")  # one miss
    run(MONITORING)


def test_popular_products(backend):
    run(POPULAR_PRODUCTS)


def test_clear_cache_command(backend):
    from io import StringIO

    from django.core.management import CommandError, call_command

    from drf_redis_toolkit.client import redis_client

    for i in range(3):
        redis_client.set(f"product:{i}", i)
    out = StringIO()
    call_command("clear_cache", "--pattern", "product:*", stdout=out)
    assert out.getvalue().strip() == "Cleared 3 keys matching pattern: product:*"
    with pytest.raises(CommandError, match=r"Please provide --pattern argument.*nothing"):
        call_command("clear_cache")
    redis_client.set("product:9", 9)
    out = StringIO()
    call_command("drt_clear_cache", "--pattern", "product:*", stdout=out)
    assert out.getvalue().strip() == "Cleared 1 keys matching pattern: product:*"


def test_clear_cache_without_a_pattern_exits_non_zero(tmp_path):
    """Run as a user does: the missing pattern is an error exit, with the message."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "sample_api/manage.py", "clear_cache"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert proc.returncode == 1
    assert "Please provide --pattern argument" in proc.stderr


def test_cache_stats_command(backend):
    import json
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("cache_stats", "--json", stdout=out)
    stats = json.loads(out.getvalue())
    assert "hit_rate" in stats and "keyspace" in stats
    if backend.is_real:
        assert stats["used_memory"] > 0


def test_cache_stats_reports_the_keyspace(backend):
    import json
    from io import StringIO

    from django.core.management import call_command

    from drf_redis_toolkit.client import redis_client

    if not backend.is_real:
        pytest.skip("fakeredis has no INFO keyspace")
    redis_client.set_many({f"k:{i}": i for i in range(30)}, timeout=600)
    out = StringIO()
    call_command("cache_stats", "--json", stdout=out)
    keyspace = json.loads(out.getvalue())["keyspace"]
    assert keyspace["db0"]["keys"] == 30  # summed over the masters on a cluster
    assert keyspace["db0"]["expires"] == 30
