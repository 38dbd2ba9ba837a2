"""Page-number pagination: ``?page=`` (and ``?page_size=`` up to 100); both are in the cache key."""

from rest_framework.pagination import PageNumberPagination


class ProductPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
