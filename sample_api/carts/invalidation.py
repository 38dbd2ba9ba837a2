"""Invalidation rules the ``INVALIDATION`` setting can't express: they need a query.

A cart's cached representation (``cart:user:{user_id}``) changes when one of
its items changes, and when a product in it changes (name, price). Both rules
are registered as ``keys``: the namespace of the cached ``GET /api/cart/``
response is bumped, and the ``cache_user_cart`` key is deleted too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from catalog.models import Product

from carts.models import Cart, CartItem
from drf_redis_toolkit.invalidation import invalidates


@invalidates(CartItem, keys=True)
def cart_owners(items: Sequence[CartItem]) -> Iterable[str]:
    """The owners of the carts these items are (or were) in: one query for all of them."""
    cart_ids = {item.cart_id for item in items}
    user_ids = Cart.objects.filter(pk__in=cart_ids).values_list("user_id", flat=True)
    return [f"cart:user:{user_id}" for user_id in user_ids]


@invalidates(Product, keys=True)
def carts_holding(products: Sequence[Product]) -> Iterable[str]:
    """Every cart showing one of these products (its name and price are in the cart)."""
    product_ids = [p.pk for p in products if p.pk is not None]
    user_ids: set[int] = set()
    for start in range(0, len(product_ids), 1000):  # bulk writes: stay under SQL parameter limits
        user_ids.update(
            CartItem.objects.filter(product_id__in=product_ids[start : start + 1000])
            .values_list("cart__user_id", flat=True)
            .distinct()
        )
    return [f"cart:user:{user_id}" for user_id in sorted(user_ids)]
