"""The catalogue: categories, tags and products."""

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Catalogue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers what the INVALIDATION setting can't say (see catalog/invalidation.py).
        from catalog import invalidation  # noqa: F401
