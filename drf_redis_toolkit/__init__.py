"""Redis-backed throttling, response caching and invalidation for Django REST Framework."""

__version__ = "0.1.0"
