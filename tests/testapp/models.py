"""Models the tests use for caching and invalidation."""

from django.conf import settings
from django.db import models


class CachedWidget(models.Model):
    """A row the response-caching tests list and retrieve (``tests/test_caching*.py``)."""

    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        app_label = "testapp"
        ordering = ["id"]
