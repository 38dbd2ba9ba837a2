"""A user's cart cached by hand with ``redis_client``, safely.

``get_user_cart`` caches under ``cart:user:{user_id}`` (the key of ``cache_user_cart``) with
``redis_client.get_or_set``;
the rules in ``carts/invalidation.py`` delete that key (and bump its
generation) whenever an item of the cart or a product in it changes, after the
commit, so ``update_cart_item`` needs no hand-written ``redis_client.delete``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from carts.models import Cart, CartItem
from drf_redis_toolkit.client import redis_client


def get_user_cart(user_id: int) -> dict[str, Any] | None:
    """Get a user's cart with caching (a Redis outage is a cache miss)."""

    def load() -> dict[str, Any] | None:
        try:
            cart = Cart.objects.get(user_id=user_id)
        except Cart.DoesNotExist:
            return None
        items = list(CartItem.objects.filter(cart=cart).select_related("product"))
        return {
            "cart_id": cart.id,
            "total_items": len(items),
            "items": [
                {
                    "product_id": item.product.id,
                    "name": item.product.name,
                    "quantity": item.quantity,
                    "price": str(item.product.price),
                }
                for item in items
            ],
        }

    return redis_client.get_or_set(f"cart:user:{user_id}", load, timeout=1800)


def update_cart_item(user_id: int, product_id: int, quantity: int) -> CartItem | None:
    """Set a product's quantity in a user's cart (0 removes it); the cache follows by itself."""
    with transaction.atomic():
        cart, _ = Cart.objects.get_or_create(user_id=user_id)
        if quantity <= 0:
            CartItem.objects.filter(cart=cart, product_id=product_id).delete()
            return None
        item, _ = CartItem.objects.update_or_create(
            cart=cart, product_id=product_id, defaults={"quantity": quantity}
        )
        return item
