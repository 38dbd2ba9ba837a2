"""Cart serializers: items show the product's current name and price."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from catalog.fields import BoundedPrimaryKeyRelatedField
from catalog.models import Product
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import ReturnDict

from carts.models import Cart, CartItem


class CartItemSerializer(serializers.ModelSerializer):
    product = BoundedPrimaryKeyRelatedField(queryset=Product.objects.all())
    name = serializers.CharField(source="product.name", read_only=True)
    unit_price = serializers.DecimalField(
        source="product.price", max_digits=10, decimal_places=2, read_only=True
    )
    line_total = serializers.DecimalField(max_digits=12, decimal_places=2, read_only=True)

    class Meta:
        model = CartItem
        fields = ["id", "product", "name", "unit_price", "quantity", "line_total"]

    def validate_quantity(self, value: int) -> int:
        if value < 1:
            raise serializers.ValidationError("must be at least 1")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is not None and "product" in attrs:
            if attrs["product"] != self.instance.product:
                raise serializers.ValidationError(
                    {"product": ["cannot change; delete the item and add another"]}
                )
        product = attrs.get("product") or getattr(self.instance, "product", None)
        quantity = attrs.get("quantity", getattr(self.instance, "quantity", 1))
        if product is not None and quantity > product.stock:
            raise serializers.ValidationError({"quantity": [f"only {product.stock} in stock"]})
        return attrs


class CartSerializer(serializers.Serializer):
    """A cart, or the empty cart of a user who has none yet (``id`` is then ``null``)."""

    @property
    def data(self) -> ReturnDict:
        # DRF renders a serializer without an instance as its empty input form;
        # here "no cart" has a representation of its own.
        return ReturnDict(self.to_representation(self.instance), serializer=self)

    def to_representation(self, cart: Cart | None) -> dict[str, Any]:
        items = list(cart.items.all()) if cart is not None else []
        return {
            "id": cart.pk if cart is not None else None,
            "items": CartItemSerializer(items, many=True).data,
            "total_items": len(items),
            "total_quantity": sum(item.quantity for item in items),
            "total_price": str(
                sum((item.line_total for item in items), Decimal("0.00")).quantize(Decimal("0.01"))
            ),
        }
