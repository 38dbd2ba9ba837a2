"""Catalogue endpoints: cached for everyone, invalidated by any write, wherever it comes from."""

from __future__ import annotations

from typing import Any

from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from catalog.fields import ID_PATH_REGEX, fits_in_int64
from catalog.models import Category, Product
from catalog.serializers import CategorySerializer, ProductSerializer
from catalog.switches import ResponseCacheSwitch
from drf_redis_toolkit.caching import CacheResponseMixin
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.mixins import ProductCacheMixin


class IsStaffOrReadOnly(BasePermission):
    """Anyone may read; only staff may write."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class CategoryViewSet(ResponseCacheSwitch, CacheResponseMixin, viewsets.ReadOnlyModelViewSet):
    """``GET /api/categories/[{id}/]``: every category, cached under ``categories:all``."""

    queryset = Category.objects.all()
    serializer_class = CategorySerializer
    pagination_class = None
    cache_per_user = False
    cache_namespace = "categories:all"
    lookup_value_regex = ID_PATH_REGEX
    cache_timeout = 3600


class ProductViewSet(ResponseCacheSwitch, ProductCacheMixin, viewsets.ModelViewSet):
    """``GET|PATCH /api/products/[{id}/]`` (``?category=``, ``?page=``); writes are staff only.

    Lists are cached per category (``category:{id}:products``) or under
    ``products:all``, details under ``product:{id}``; staff writes invalidate
    them before answering, and so do saves from the admin or a shell (the
    ``INVALIDATION`` setting). Detail views are counted for
    ``GET /api/products/popular/`` (counted on cache hits too).
    """

    serializer_class = ProductSerializer
    permission_classes = [IsStaffOrReadOnly]
    cache_timeout = 600
    lookup_value_regex = ID_PATH_REGEX

    def get_queryset(self) -> Any:
        queryset = Product.objects.prefetch_related("tags")
        if self.action == "list":
            raw = self.request.query_params.get(self.category_query_param)
            if raw not in (None, ""):
                category = self.get_category_filter(self.request)
                if category is None or not fits_in_int64(category):
                    raise ValidationError({"category": [f"{raw!r} is not a category id."]})
                queryset = queryset.filter(category_id=category)
        return queryset

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        """Count a product view once it is answered (a cache hit and a 304 included).

        Only a found product is counted: a view of any id counted before the answer
        let requests for ids that do not exist grow the day's ranking without end.
        """
        response = super().dispatch(request, *args, **kwargs)
        if getattr(self, "action", None) == "retrieve" and response.status_code in (200, 304):
            try:
                # The id as a number: ``/01/`` and ``/1/`` find the same product, and
                # counting the URL's spelling would rank it once per spelling.
                redis_client.track_product_view(int(self.kwargs[self.lookup_url_kwarg or "pk"]))
            except RedisUnavailable:
                pass  # popularity is best effort
        return response

    def get_cache_key(self, request: Request) -> str | None:
        if self.action == "popular":
            return None  # counts move on every view: never cached
        return super().get_cache_key(request)

    @action(detail=False)
    def popular(self, request: Request) -> Response:
        """The 10 most viewed products of the last 7 days: ``[{id, name, views}, ...]``."""
        try:
            ranking = redis_client.get_popular_products(limit=10)
        except RedisUnavailable:
            ranking = []
        ids = [pid for pid, _ in ranking if isinstance(pid, int)]
        names = dict(Product.objects.filter(pk__in=ids).values_list("pk", "name"))
        return Response(
            [
                {"id": pid, "name": names[pid], "views": views}
                for pid, views in ranking
                if pid in names
            ]
        )
