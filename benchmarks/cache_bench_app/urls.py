"""The contenders: one list view of 100 products, cached four ways, and the floor."""

from typing import Any

from django.urls import path
from django.views.decorators.cache import cache_page
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_extensions.cache.decorators import cache_response as ext_cache_response

from cache_bench_app.models import BenchProduct
from drf_redis_toolkit.caching import CacheResponseMixin
from drf_redis_toolkit.connection import guarded


class ProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = BenchProduct
        fields = "__all__"


class ProductList(ListAPIView):
    queryset = BenchProduct.objects.all()
    serializer_class = ProductSerializer


class OurProductList(CacheResponseMixin, ProductList):
    cache_per_user = False
    cache_namespace = "products:all"


class OurPerUserProductList(CacheResponseMixin, ProductList):
    cache_namespace = "products:all"


class ExtProductList(ProductList):
    @ext_cache_response(timeout=300)
    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return super().get(request, *args, **kwargs)


class Empty(APIView):
    def get(self, request: Any) -> Response:
        return Response({})


class EmptyPlusGet(APIView):
    """The floor of any hit: DRF's checks, one Redis GET, a tiny response."""

    def get(self, request: Any) -> Response:
        with guarded() as client:
            client.get("bench:probe")
        return Response({})


urlpatterns = [
    path("empty/", Empty.as_view()),
    path("empty-get/", EmptyPlusGet.as_view()),
    path("uncached/", ProductList.as_view()),
    path("ours/", OurProductList.as_view()),
    path("ours-per-user/", OurPerUserProductList.as_view()),
    path("ext/", ExtProductList.as_view()),
    path("cache-page/", cache_page(300)(ProductList.as_view())),
]
