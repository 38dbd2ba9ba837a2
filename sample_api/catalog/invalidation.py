"""Invalidation the ``INVALIDATION`` setting can't express for the catalogue.

A product's representation lists its tags by slug, so renaming a tag changes
every product carrying it: their details and their categories' lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from catalog.models import Product, Tag
from drf_redis_toolkit.invalidation import invalidates


@invalidates(Tag, keys=True)
def tagged_products(tags: Sequence[Tag]) -> Iterable[str]:
    """``product:{id}`` and ``category:{id}:products`` of every product with these tags."""
    rows = (
        Product.objects.filter(tags__in=[t.pk for t in tags if t.pk is not None])
        .values_list("pk", "category_id")
        .distinct()
    )
    names: set[str] = set()
    for pk, category_id in rows:
        names.add(f"product:{pk}")
        names.add(f"category:{category_id}:products")
    return sorted(names)
