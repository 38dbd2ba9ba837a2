"""Carts: one per user, with items that point at products."""

from django.apps import AppConfig


class CartsConfig(AppConfig):
    name = "carts"
    verbose_name = "Carts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers what the INVALIDATION setting can't say (see carts/invalidation.py).
        from carts import invalidation  # noqa: F401
