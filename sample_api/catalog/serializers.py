"""Serializers of the catalogue (flat: a product names its category by id)."""

from __future__ import annotations

from rest_framework import serializers

from catalog.fields import BoundedPrimaryKeyRelatedField
from catalog.models import Category, Product, Tag


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["id", "name", "slug", "description"]


class ProductSerializer(serializers.ModelSerializer):
    serializer_related_field = BoundedPrimaryKeyRelatedField
    tags = serializers.SlugRelatedField(
        slug_field="slug", many=True, queryset=Tag.objects.all(), required=False
    )

    class Meta:
        model = Product
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "price",
            "stock",
            "category",
            "tags",
            "updated_at",
        ]
        read_only_fields = ["updated_at"]
