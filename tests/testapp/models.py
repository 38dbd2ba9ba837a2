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


class Gadget(models.Model):
    """A parent model: the rules of a model apply to its proxies and children too
    (``tests/test_invalidation_mutants.py``)."""

    name = models.CharField(max_length=100)

    class Meta:
        app_label = "testapp"


class SpecialGadget(Gadget):
    """A multi-table child of ``Gadget`` (its own table, a link to the parent's row)."""

    colour = models.CharField(max_length=20, default="red")

    class Meta:
        app_label = "testapp"


class GadgetProxy(Gadget):
    """A proxy of ``Gadget`` (the same table)."""

    class Meta:
        app_label = "testapp"
        proxy = True


class SpecialGadgetProxy(SpecialGadget):
    """A proxy of the child: its concrete model is ``SpecialGadget``, whose parent is ``Gadget``."""

    class Meta:
        app_label = "testapp"
        proxy = True


class WidgetShelf(models.Model):
    """Widgets on a shelf, a relation with no reverse accessor (``related_name="+"``).

    The rules of ``CachedWidget`` must still see it: adding a widget to a shelf,
    or deleting the shelf, changes the widget's names (tests/test_rules_mutants.py).
    """

    name = models.CharField(max_length=100)
    widgets = models.ManyToManyField(CachedWidget, related_name="+")

    class Meta:
        app_label = "testapp"
        ordering = ["id"]
