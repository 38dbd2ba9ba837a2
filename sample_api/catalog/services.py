"""The seed guide's Example 1, as written against the toolkit.

``get_product_detail`` caches a product the seed's way (``cache_product`` /
``get_cached_product`` on the ``redis_client`` key ``product:{id}``). The
``INVALIDATION`` rule for ``catalog.Product`` lists ``product:{pk}`` under
``keys``: every committed save or delete of the product deletes the key *and*
bumps the generation of the name ``product:{id}``. The function reads that
generation before the database and again after storing; if it moved, an
invalidation raced with this read, and the possibly stale copy is deleted
instead of living until its TTL. (The API's detail endpoint uses the response
cache, whose entries carry the generation, and needs none of this.)
"""

from __future__ import annotations

from typing import Any

from catalog.models import Product
from drf_redis_toolkit.client import cache_product, get_cached_product, redis_client
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.generations import read_generations


def get_product_detail(product_id: int) -> dict[str, Any] | None:
    """Get a product with caching (a Redis outage is a cache miss)."""
    name = f"product:{product_id}"
    try:
        cached = get_cached_product(product_id)
        if cached:
            return cached
        before = read_generations(name)[name]
    except RedisUnavailable:
        before = None
    try:
        product = Product.objects.get(id=product_id)
    except Product.DoesNotExist:
        return None
    data = {
        "id": product.id,
        "name": product.name,
        "price": str(product.price),
        "stock": product.stock,
        "description": product.description,
    }
    if before is not None:
        try:
            cache_product(product_id, data, timeout=600)
            if read_generations(name)[name] != before:
                redis_client.delete(name)  # invalidated while we read: don't keep it
        except RedisUnavailable:
            pass
    return data
