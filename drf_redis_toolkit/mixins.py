"""Viewset mixins: cached product and cart endpoints that invalidate what their writes change.

``ProductCacheMixin`` caches a catalogue shared by every user: a detail under
``product:{id}``, a list whose queryset is restricted to one category under
``category:{id}:products``, any other list under ``products:all`` (the query
string, hence pagination and filters, is part of each entry's key). Which
category a list shows is read from its queryset, never trusted from
``?category=``: a view that forgets to filter lands under ``products:all``,
which every product write invalidates.
``CartCacheMixin`` caches a cart per user under ``cart:user:{user_id}``, and
only ever serves it to that user.

Both invalidate on every successful write request (``create``, ``update``,
``partial_update``, ``destroy`` and custom write ``@action``\\ s): the names of
each object before the write (as ``get_object()`` loaded it) and after, plus
the collection's names. The names go through ``drf_redis_toolkit.invalidation``
like the signal receivers' do, batched with them into one Redis call that runs
when the transaction commits, before the response is returned.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import DEFAULT_DB_ALIAS, models, router
from django.db.models.expressions import Col
from django.db.models.sql.where import AND
from django.http.response import HttpResponseBase
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from drf_redis_toolkit import invalidation
from drf_redis_toolkit.caching import CacheResponseMixin
from drf_redis_toolkit.invalidation import Names

__all__ = ["CartCacheMixin", "InvalidateOnWriteMixin", "ProductCacheMixin"]


def _canonical(model: type[models.Model] | None, field_name: str, value: Any) -> str | None:
    """``value`` as the database will compare it (``"05"`` -> ``"5"``); ``None`` if invalid.

    A namespace must be named after the value the query filters by, or a
    request for ``/products/05/`` would be cached where invalidating
    ``product:5`` never reaches it.
    """
    if value is None or value == "":
        return None
    if model is None:
        return str(value)
    try:
        model_field: Any = model._meta.get_field(field_name)
        target = getattr(model_field, "target_field", None) or model_field
        return str(target.to_python(value))
    except (ValidationError, ValueError, TypeError, LookupError):
        return None


def _restricted_to(queryset: Any, field_name: str) -> str | None:
    """The value ``queryset`` is restricted to by ``field_name=<value>``, canonical, or ``None``.

    Reads the query's top-level ``WHERE``: only an ``AND`` of conditions, one of
    them an exact match on the model's own column, proves that every row shares
    that value. Anything else (``OR``, negation, ``__in``, a joined table, a
    union) answers ``None``: the caller then depends on a coarser name, which is
    never stale, only invalidated more often.
    """
    query = getattr(queryset, "query", None)
    if query is None or query.combinator or query.where.negated or query.where.connector != AND:
        return None
    model = query.model
    try:
        field = model._meta.get_field(field_name)
    except LookupError:
        return None
    values = set()
    for condition in query.where.children:
        column = getattr(condition, "lhs", None)
        if (
            getattr(condition, "lookup_name", None) != "exact"
            or not isinstance(column, Col)
            or column.alias != query.base_table
            or getattr(column.target, "attname", None) != field.attname
            or hasattr(condition.rhs, "resolve_expression")
        ):
            continue
        values.add(_canonical(model, field_name, condition.rhs))
    if len(values) != 1:
        return None  # none, or two different ones (an empty list: any name is right)
    return values.pop()


class InvalidateOnWriteMixin:
    """Invalidate, after every successful write request, what the request changed.

    Override ``get_invalidation_names(obj)`` (the names one object's cached data
    lives under) and ``get_collection_invalidation_names(request)`` (names any
    write invalidates, e.g. the list). Objects are seen as ``get_object()``
    loaded them, as ``perform_create``/``perform_update`` saved them, and as
    ``perform_destroy`` was about to delete them; an object a custom action
    changed in place is seen again after the action.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        try:
            is_async = getattr(cls, "view_is_async", False) is True  # adrf, Django views
        except ImproperlyConfigured:  # mixed sync and async handlers: Django says so itself
            is_async = False
        if is_async:
            raise ImproperlyConfigured(
                f"{cls.__qualname__}: {InvalidateOnWriteMixin.__name__} and the viewset mixins "
                "built on it work on sync views only; on an adrf async view, invalidate with "
                "signal rules (INVALIDATION) or invalidate_namespace() in transaction.on_commit "
                "(docs/async.md)"
            )

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method in SAFE_METHODS:
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        self._drt_names = invalidation.EMPTY
        self._drt_touched: list[models.Model] = []
        # One batch for the whole request: the signal receivers' names and ours
        # reach Redis in one call, at the commit (Django's ATOMIC_REQUESTS
        # included), before the response leaves.
        with invalidation.batch():
            response = super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
            if response.status_code < 400:
                request = self.request  # type: ignore[attr-defined]
                names = self._drt_names | self.get_collection_invalidation_names(request)
                for obj in self._drt_touched:
                    if obj.pk is not None:  # deleted objects were recorded before deletion
                        names = names | self.get_invalidation_names(obj)
                invalidation.invalidate(
                    names.namespaces,
                    names.keys,
                    using=self._invalidation_alias(),
                    sender=self._invalidation_model(),
                )
        return response

    def _record(self, obj: models.Model | None) -> None:
        if obj is not None and hasattr(self, "_drt_names"):
            self._drt_names = self._drt_names | self.get_invalidation_names(obj)

    def _invalidation_model(self) -> type[models.Model] | None:
        queryset = getattr(self, "queryset", None)
        if queryset is not None:
            return queryset.model
        serializer_class = getattr(self, "serializer_class", None)
        meta = getattr(serializer_class, "Meta", None)
        return getattr(meta, "model", None)

    def _invalidation_alias(self) -> str:
        model = self._invalidation_model()
        return router.db_for_write(model) if model is not None else DEFAULT_DB_ALIAS

    def get_object(self) -> Any:
        obj = super().get_object()  # type: ignore[misc]
        method = self.request.method  # type: ignore[attr-defined]
        if method not in SAFE_METHODS and hasattr(self, "_drt_touched"):
            self._record(obj)  # its names before the write (e.g. its old category)
            self._drt_touched.append(obj)  # and after, once the request succeeded
        return obj

    def perform_create(self, serializer: Any) -> None:
        super().perform_create(serializer)  # type: ignore[misc]
        self._record(serializer.instance)

    def perform_update(self, serializer: Any) -> None:
        super().perform_update(serializer)  # type: ignore[misc]
        self._record(serializer.instance)

    def perform_destroy(self, instance: Any) -> None:
        self._record(instance)
        super().perform_destroy(instance)  # type: ignore[misc]

    def get_invalidation_names(self, obj: Any) -> Names:
        """The names cached data about ``obj`` lives under."""
        return invalidation.EMPTY

    def get_collection_invalidation_names(self, request: Request) -> Names:
        """The names any successful write through this view invalidates."""
        return invalidation.EMPTY


class ProductCacheMixin(InvalidateOnWriteMixin, CacheResponseMixin):
    """Cache a product ``ModelViewSet`` for everyone; invalidate what its writes change.

    GET/HEAD answers are shared (``cache_per_user = False``): put only public
    data behind it. The names are ``product_key``, ``category_key`` and
    ``list_key``; writes invalidate them as ``keys`` (the generation is bumped
    and a ``redis_client`` key of that name deleted, so a value stored with
    ``cache_product`` goes too). A list is cached under ``category_key`` only
    when ``get_list_category()`` proves its queryset holds that one category.
    """

    cache_per_user = False
    #: Query parameter filtering a list by category (its value names the namespace).
    category_query_param = "category"
    #: The model field holding a product's category.
    category_field = "category"
    product_key = "product:{pk}"
    category_key = "category:{category}:products"
    list_key = "products:all"

    def _model(self) -> type[models.Model] | None:
        return self._invalidation_model()

    def get_category_filter(self, request: Request) -> str | None:
        """The ``?category=`` value, canonical; ``None`` if absent or not a valid id.

        A helper for ``get_queryset()``: filter the list by this value
        (``queryset.filter(category_id=...)``) and the list is cached under that
        category's name. Reading it does not filter anything by itself.
        """
        raw = request.query_params.get(self.category_query_param)
        return _canonical(self._model(), self.category_field, raw)

    def get_list_category(self, request: Request) -> str | None:
        """The one category this list's queryset is restricted to; ``None`` if it is not.

        Read from the queryset the list will run (``filter_queryset(get_queryset())``),
        not from the query string: a view that forgets to filter by ``?category=``
        serves every category's products, so its list must depend on a name
        every product write invalidates. Only a top-level ``category=<id>``
        condition counts; anything the toolkit cannot prove (``__in``, ``Q(...) |
        Q(...)``, a filter through a join) gives ``None``. A ``list()`` that
        serves rows from elsewhere than this queryset is beyond what it can see.
        Both hooks run on cache hits too: keep them free of queries.
        """
        if getattr(self, "action", "list") != "list" or not hasattr(self, "filter_queryset"):
            return None  # a custom GET action may read any product
        queryset = self.filter_queryset(self.get_queryset())  # type: ignore[attr-defined]
        return _restricted_to(queryset, self.category_field)

    def get_cache_namespace(self, request: Request) -> str:
        lookup = self.lookup_url_kwarg or self.lookup_field  # type: ignore[attr-defined]
        kwargs = getattr(self, "kwargs", {}) or {}
        if lookup in kwargs:
            model = self._model()
            field = self.lookup_field  # type: ignore[attr-defined]
            if model is not None and field not in ("pk", model._meta.pk.name):
                # Looked up by another field: the pk is unknown before the view
                # runs, so depend on the list namespace every product write bumps.
                return self.list_key
            value = _canonical(
                model, "pk" if model is None else model._meta.pk.name, kwargs[lookup]
            )
            return self.product_key.format(pk=value if value is not None else kwargs[lookup])
        category = self.get_list_category(request)
        if category is not None:
            return self.category_key.format(category=category)
        # Not provably one category's products: every product write bumps this.
        return self.list_key

    def get_invalidation_names(self, obj: Any) -> Names:
        model = type(obj)
        attname = model._meta.get_field(self.category_field).attname
        names = {self.product_key.format(pk=obj.pk), self.list_key}
        category = getattr(obj, attname, None)
        if category is not None:
            names.add(self.category_key.format(category=category))
        return Names(keys=frozenset(names))

    def get_collection_invalidation_names(self, request: Request) -> Names:
        return Names(keys=frozenset({self.list_key}))


class CartCacheMixin(InvalidateOnWriteMixin, CacheResponseMixin):
    """Cache a user's cart endpoints per user, under ``cart:user:{user_id}``.

    Entries are always per user (``cache_per_user`` cannot be turned off here)
    and anonymous requests are never cached, so a cart is only ever served to
    its owner. A successful write invalidates the requesting user's cart (and
    the owner's, given by ``get_cart_owner_id(obj)``, of every object it touched).
    """

    cache_per_user = True
    cart_key = "cart:user:{user_id}"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.cache_per_user is not True:
            raise ImproperlyConfigured(
                f"{cls.__qualname__}: a CartCacheMixin view must keep cache_per_user = True "
                "(a cart is only ever served to its owner)"
            )

    def get_cache_key(self, request: Request) -> str | None:
        if not getattr(request.user, "is_authenticated", False) or request.user.pk is None:
            return None
        return super().get_cache_key(request)

    def get_cache_namespace(self, request: Request) -> str:
        return self.cart_key.format(user_id=request.user.pk)

    def get_cart_owner_id(self, obj: Any) -> Any:
        """The user whose cart ``obj`` belongs to (default: the requesting user)."""
        return self.request.user.pk  # type: ignore[attr-defined]

    def get_invalidation_names(self, obj: Any) -> Names:
        owner = self.get_cart_owner_id(obj)
        if owner is None:
            return invalidation.EMPTY
        return Names(keys=frozenset({self.cart_key.format(user_id=owner)}))

    def get_collection_invalidation_names(self, request: Request) -> Names:
        if request.user.pk is None:
            return invalidation.EMPTY
        return Names(keys=frozenset({self.cart_key.format(user_id=request.user.pk)}))
