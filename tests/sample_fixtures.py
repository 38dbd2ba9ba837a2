"""Fixtures for tests of the sample API and of invalidation (imported by those test modules).

``shop`` points the toolkit at the test's Redis with the sample API's own
settings (``INVALIDATION``, ``KEY_PREFIX``, URLs, middleware, DRF settings), and
``catalog`` creates a small catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from config import settings as sample_settings
from django.utils.module_loading import import_string

from drf_redis_toolkit import invalidation
from drf_redis_toolkit.generations import read_generations

#: Rates no test reaches unless it means to.
GENEROUS_RATES = {"anon": "100000/s", "user": "100000/s", "cart_write": "100000/s"}


@pytest.fixture
def shop(settings: Any, backend: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The sample API's settings on the test's Redis backend; returns the backend."""
    apply_shop_settings(settings, backend)
    apply_shop_view_classes(monkeypatch)
    return backend


@pytest.fixture
def real_shop(settings: Any, real_backend: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``shop`` on the real redis-server only."""
    apply_shop_settings(settings, real_backend)
    apply_shop_view_classes(monkeypatch)
    return real_backend


def apply_shop_view_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the sample's views the classes its ``REST_FRAMEWORK`` names.

    DRF copies ``DEFAULT_AUTHENTICATION_CLASSES``, ``DEFAULT_THROTTLE_CLASSES``
    and ``DEFAULT_PAGINATION_CLASS`` into class attributes when
    ``rest_framework.views`` is first imported, which in this suite happens
    under the test settings, so overriding the settings alone would not reach them.
    """
    from carts.views import CartItemViewSet, CartViewSet
    from catalog.views import CategoryViewSet, ProductViewSet

    config = sample_settings.REST_FRAMEWORK
    authentication = [import_string(path) for path in config["DEFAULT_AUTHENTICATION_CLASSES"]]
    throttles = [import_string(path) for path in config["DEFAULT_THROTTLE_CLASSES"]]
    for view in (CategoryViewSet, ProductViewSet, CartViewSet, CartItemViewSet):
        monkeypatch.setattr(view, "authentication_classes", authentication)
        monkeypatch.setattr(view, "throttle_classes", throttles)
    monkeypatch.setattr(
        ProductViewSet, "pagination_class", import_string(config["DEFAULT_PAGINATION_CLASS"])
    )


def apply_shop_settings(settings: Any, backend: Any, **rates: str) -> None:
    settings.ROOT_URLCONF = "config.urls"
    settings.MIDDLEWARE = sample_settings.MIDDLEWARE
    settings.REST_FRAMEWORK = {
        **sample_settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**GENEROUS_RATES, **rates},
    }
    settings.DRF_REDIS_TOOLKIT = {
        **backend.settings,
        "KEY_PREFIX": "shop",
        "INVALIDATION": sample_settings.SHOP_INVALIDATION,
        # DRT_LOCAL_CACHE=1 runs the sample's tests with it on (fakeredis cannot track).
        "LOCAL_CACHE": getattr(backend, "is_real", True)
        and sample_settings.DRF_REDIS_TOOLKIT["LOCAL_CACHE"],
    }
    invalidation._pending.clear()


@dataclass
class Catalog:
    categories: list[Any]
    tags: list[Any]
    products: list[Any]


@pytest.fixture
def second_database(db: Any, tmp_path: Path) -> Iterator[str]:
    """A second database, ``"other"``: a SQLite file with catalog's ``Category`` table.

    The suite's settings have one database (a second one in them would be polled by
    every request of every test); this one exists for the test only. Created after
    the test case set up its databases, so it is connected here: the test case lets
    a database it does not know of run queries only on an open connection. Removed
    before the test case tears down (``db`` is set up first, so torn down last).
    Tests create any other table they need there with its ``schema_editor()``.
    """
    from catalog.models import Category
    from django.db import connections

    default = dict(connections.settings["default"])
    entry = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "other.sqlite3")}
    connections.settings["other"] = connections.configure_settings(
        {"default": default, "other": entry}
    )["other"]
    other = connections["other"]
    other.connect()
    try:
        with other.schema_editor() as editor:
            editor.create_model(Category)  # the data a write there changes
        yield "other"
    finally:
        other.close()
        del connections["other"]
        del connections.settings["other"]


@pytest.fixture
def catalog() -> Catalog:
    """Two categories of three products, two tags. Request ``shop``/``real_shop`` first."""
    return make_catalog()


def make_catalog(products_per_category: int = 3) -> Catalog:
    from catalog.models import Category, Product, Tag

    categories = [
        Category.objects.create(name=name, slug=name.lower()) for name in ("Books", "Games")
    ]
    tags = [Tag.objects.create(name=name.title(), slug=name) for name in ("new", "sale")]
    products = []
    for category in categories:
        for n in range(products_per_category):
            products.append(
                Product.objects.create(
                    name=f"{category.name} {n}",
                    slug=f"{category.slug}-{n}",
                    price=Decimal("10.00") + n,
                    stock=5,
                    category=category,
                )
            )
    products[0].tags.add(tags[0])
    return Catalog(categories, tags, products)


def database_url() -> str:
    """The test database as a ``DATABASE_URL``, for the sample API run in another process."""
    from django.db import connection

    entry = connection.settings_dict
    # By vendor, not ENGINE: on Django < 5.1 the engine is config.sqlite_compat.
    if connection.vendor == "sqlite":
        return f"sqlite:///{entry['NAME']}"
    return f"postgres://{entry['USER']}@{entry['HOST']}:{entry['PORT']}/{entry['NAME']}"


class Generations:
    """Watch namespace generations: which of the names were bumped since the snapshot."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(dict.fromkeys(names))
        self.snapshot()

    def snapshot(self) -> None:
        self.before = read_generations(*self.names)

    def bumped(self) -> set[str]:
        now = read_generations(*self.names)
        return {name for name in self.names if now[name] != self.before[name]}
