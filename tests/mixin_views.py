"""Viewsets and URLs for ``tests/test_mixins.py`` (built on the sample API's models)."""

from __future__ import annotations

from carts.models import CartItem
from catalog.models import Product
from catalog.pagination import ProductPagination
from catalog.serializers import ProductSerializer
from django.db.models import F
from django.urls import include, path
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from drf_redis_toolkit.mixins import CartCacheMixin, ProductCacheMixin


class LooseViewSet(ProductCacheMixin, viewsets.ModelViewSet):
    """Products, writable by anyone, whose list forgets to filter by ``?category=``."""

    queryset = Product.objects.order_by("pk")
    serializer_class = ProductSerializer
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = []
    pagination_class = None


class GadgetViewSet(LooseViewSet):
    """Products filtered by ``?category=``, with write actions that send no model signals."""

    pagination_class = ProductPagination

    def get_queryset(self):
        queryset = super().get_queryset()
        category = self.get_category_filter(self.request)
        return queryset.filter(category_id=category) if category else queryset

    @action(detail=True, methods=["post"])
    def restock(self, request, pk=None):
        product = self.get_object()
        # A signal-less write: only the mixin's own invalidation can see it.
        Product._base_manager.filter(pk=product.pk).update(stock=F("stock") + 10)
        product.refresh_from_db()
        return Response({"stock": product.stock})

    @action(detail=True, methods=["post"])
    def move(self, request, pk=None):
        product = self.get_object()
        category = int(request.data["category"])
        Product._base_manager.filter(pk=product.pk).update(category_id=category)
        product.category_id = category  # changed in place: seen again after the action
        return Response({"category": category})


class GadgetBySlugViewSet(ProductCacheMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Product.objects.all()
    serializer_class = ProductSerializer
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = []
    lookup_field = "slug"


class OpenCartViewSet(CartCacheMixin, viewsets.ReadOnlyModelViewSet):
    """A cart endpoint that lets anonymous requests in: they must never be cached."""

    queryset = CartItem.objects.none()
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = []

    def list(self, request):
        return Response({"items": []})


router = SimpleRouter()
router.register("gadgets", GadgetViewSet, basename="gadget")
router.register("loose", LooseViewSet, basename="loose")
router.register("by-slug", GadgetBySlugViewSet, basename="by-slug")
router.register("open-cart", OpenCartViewSet, basename="open-cart")
urlpatterns = [path("", include(router.urls))]
