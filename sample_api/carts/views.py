"""Cart endpoints: cached per user (``cart:user:{id}``), never served to anyone else."""

from __future__ import annotations

from typing import Any

from catalog.fields import ID_PATH_REGEX
from catalog.switches import ResponseCacheSwitch
from django.conf import settings
from django.db import transaction
from django.db.models import Prefetch
from django.utils.module_loading import import_string
from rest_framework import mixins, status, viewsets
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from carts.models import Cart, CartItem
from carts.serializers import CartItemSerializer, CartSerializer
from drf_redis_toolkit.mixins import CartCacheMixin
from drf_redis_toolkit.throttling import ScopedSlidingWindowThrottle


class CartViewSet(ResponseCacheSwitch, CartCacheMixin, viewsets.GenericViewSet):
    """``GET /api/cart/``: the user's cart with its items and totals (3 queries on a miss)."""

    permission_classes = [IsAuthenticated]
    serializer_class = CartSerializer
    cache_timeout = 1800

    def get_queryset(self) -> Any:
        items = CartItem.objects.select_related("product").order_by("id")
        return Cart.objects.filter(user=self.request.user).prefetch_related(
            Prefetch("items", queryset=items)
        )

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(CartSerializer(self.get_queryset().first()).data)


class CartItemViewSet(
    ResponseCacheSwitch,
    CartCacheMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """``POST /api/cart/items/``, ``PATCH|DELETE /api/cart/items/{id}/`` (and GET).

    Adding a product already in the cart adds to its quantity (``200``; a new
    line is ``201``). Writes are throttled by the ``cart_write`` scope on top
    of the default anon/user throttles.
    """

    permission_classes = [IsAuthenticated]
    serializer_class = CartItemSerializer
    pagination_class = None
    lookup_value_regex = ID_PATH_REGEX
    throttle_scope = "cart_write"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    cache_timeout = 1800

    def get_queryset(self) -> Any:
        return CartItem.objects.filter(cart__user=self.request.user).select_related("product")

    def get_throttles(self) -> list[Any]:
        throttles = super().get_throttles()
        if self.request.method not in SAFE_METHODS:
            throttle_class = getattr(settings, "SHOP_CART_WRITE_THROTTLE", None)
            throttles.append(
                import_string(throttle_class)() if throttle_class else ScopedSlidingWindowThrottle()
            )
        return throttles

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        product = serializer.validated_data["product"]
        quantity = serializer.validated_data.get("quantity", 1)
        with transaction.atomic():
            cart, _ = Cart.objects.get_or_create(user=request.user)
            existing = (
                CartItem.objects.select_for_update().filter(cart=cart, product=product).first()
            )
            if existing is None:
                serializer.save(cart=cart)
                self._record(serializer.instance)
                return Response(serializer.data, status=status.HTTP_201_CREATED)
            merged = self.get_serializer(
                existing, data={"quantity": existing.quantity + quantity}, partial=True
            )
            merged.is_valid(raise_exception=True)
            self.perform_update(merged)
        return Response(merged.data, status=status.HTTP_200_OK)
