"""A URLconf for the ``@cache_response`` argument check: good and misspelt attribute names."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from drf_redis_toolkit.caching import cache_response


class Named(APIView):
    list_cache_timeout = 60

    def calculate_cache_key(self, *args, **kwargs):
        return "k"

    @cache_response(timeout="list_cache_timeout", key_func="calculate_cache_key")
    def get(self, request):
        return Response({})


class Misspelt(APIView):
    list_cache_timeout = 60

    @cache_response(timeout="list_cache_timout")
    def get(self, request):
        return Response({})


class NotCallable(APIView):
    key_name = "fixed"

    @cache_response(key_func="key_name")
    def get(self, request):
        return Response({})


class FromInitkwargs(APIView):
    object_cache_timeout = None

    @cache_response(timeout="object_cache_timeout")
    def get(self, request):
        return Response({})


urlpatterns = [
    path("named/", Named.as_view()),
    path("in/", include([path("misspelt/", Misspelt.as_view())])),
    path("not-callable/", NotCallable.as_view()),
    path("initkwargs/", FromInitkwargs.as_view(object_cache_timeout=30)),
]
