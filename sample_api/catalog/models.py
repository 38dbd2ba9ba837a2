"""Catalogue models: a product belongs to one category and has any number of tags.

``Product.objects`` is an ``InvalidatingManager``: ``update()``, ``bulk_create()``
and ``bulk_update()`` (which send no signals) invalidate the cache too, from
the same ``INVALIDATION`` rules the signal receivers use.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from drf_redis_toolkit.invalidation import InvalidatingManager


class Category(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.CharField(max_length=50)
    slug = models.SlugField(max_length=50, unique=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    price = models.DecimalField(
        max_digits=10, decimal_places=2, validators=[MinValueValidator(Decimal("0.00"))]
    )
    stock = models.PositiveIntegerField(default=0)
    # PROTECT: a category with products cannot vanish under them (SET_NULL would
    # rewrite the products with a signal-less UPDATE).
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    tags = models.ManyToManyField(Tag, blank=True, related_name="products")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = InvalidatingManager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name
