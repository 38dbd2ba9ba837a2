"""A product's details cached by hand with ``redis_client``, safely.

``get_product_detail`` caches a product under the ``redis_client`` key
``product:{id}`` (what ``cache_product`` / ``get_cached_product`` read and write).
The ``INVALIDATION`` rule for ``catalog.Product`` lists ``product:{pk}`` under
``keys``: every committed save or delete of the product deletes the key *and*
bumps the generation of the name ``product:{id}``. ``redis_client.get_or_set``
reads that generation before the database and again after storing; if it moved,
an invalidation raced with this read, and the possibly stale copy is deleted
instead of living until its TTL. (The API's detail endpoint uses the response
cache, whose entries carry the generation, and needs none of this.)
"""

from __future__ import annotations

from typing import Any

from catalog.models import Product
from drf_redis_toolkit.client import redis_client


def get_product_detail(product_id: int) -> dict[str, Any] | None:
    """Get a product with caching (a Redis outage is a cache miss)."""

    def load() -> dict[str, Any] | None:
        try:
            product = Product.objects.get(id=product_id)
        except Product.DoesNotExist:
            return None
        return {
            "id": product.id,
            "name": product.name,
            "price": str(product.price),
            "stock": product.stock,
            "description": product.description,
        }

    return redis_client.get_or_set(f"product:{product_id}", load, timeout=600)
