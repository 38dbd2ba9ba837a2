"""Page-number pagination: ``?page=`` (and ``?page_size=`` up to 100); both are in the cache key.

A page's rows and its ``count`` come from one SQL statement, so they describe
one state of the database even while writers move rows in and out of the list.

Django's ``Paginator`` runs two statements: ``SELECT COUNT(*)``, then the page
sliced to ``[bottom:min(bottom + per_page, count)]``. Outside a transaction
(autocommit, on SQLite and on PostgreSQL's READ COMMITTED alike) each statement
sees the data committed when it starts. If a row moves *into* the list between
the two, the last page is cut at the old count and loses the row that sorts
last, although that row never left the list: an answer no state of the
database ever held (tests/test_sample_api_concurrency.py reproduces it with
Django alone). Counting in a subquery of the page's own ``SELECT`` gives the
rows and their total from the same snapshot: a statement sees one snapshot,
its subqueries included, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db.models import Count, QuerySet, Subquery, Value
from django.utils.translation import gettext_lazy as _
from rest_framework.pagination import PageNumberPagination

#: SQL offsets and limits are signed 64-bit integers.
_MAX_OFFSET = 2**63 - 1

#: Django < 5.0's ``Paginator`` has no ``error_messages`` (its texts are inline); these are
#: the same texts, so a page answers alike on every supported Django.
_DJANGO_4_MESSAGES = {
    "invalid_page": _("That page number is not an integer"),
    "min_page": _("That page number is less than 1"),
    "no_results": _("That page contains no results"),
}


class SnapshotPaginator(Paginator):
    """A ``Paginator`` whose page and ``count`` are read by one ``SELECT`` (one snapshot).

    The total rides on every row as an uncorrelated scalar subquery,
    ``(SELECT COUNT(id) FROM ... WHERE <the same filter>)``, which both databases
    evaluate once; a page with no rows needs no count (page 1 is empty, any
    other page is out of range). Lists that are not plain querysets, or use
    ``DISTINCT`` or ``GROUP BY`` (which that count would not reproduce), are
    paginated the usual way.
    """

    total_attribute = "_snapshot_total"

    def page(self, number: Any) -> Page:
        queryset = self.object_list
        if (
            not isinstance(queryset, QuerySet)
            or queryset.query.distinct
            or queryset.query.group_by is not None
        ):
            return super().page(number)
        number = self._whole_number(number)
        bottom = (number - 1) * self.per_page
        if bottom + self.per_page + self.orphans >= _MAX_OFFSET:
            # No table holds 2**63 rows, and the database could not take the OFFSET.
            raise EmptyPage(self._message("no_results"))
        # Up to ``orphans`` extra rows: the last page takes them rather than leave them alone.
        counted = queryset.order_by().values(_one=Value(1)).annotate(_n=Count("pk")).values("_n")
        page = queryset.annotate(**{self.total_attribute: Subquery(counted)})
        rows = list(page[bottom : bottom + self.per_page + self.orphans])
        if not rows and (number > 1 or not self.allow_empty_first_page):
            raise EmptyPage(self._message("no_results"))
        total = getattr(rows[0], self.total_attribute) if rows else 0
        self.__dict__["count"] = total  # cached_property: the count of this snapshot
        self.__dict__.pop("num_pages", None)  # computed from the count (e.g. for ?page=last)
        if number > self.num_pages:
            raise EmptyPage(self._message("no_results"))
        if bottom + self.per_page + self.orphans < total:
            rows = rows[: self.per_page]  # not the last page: the extra rows belong to the next
        return self._get_page(rows, number, self)

    def _message(self, key: str) -> str:
        """Django's text for ``key``: ``error_messages`` on 5.0+, the same fixed texts on 4.2."""
        messages = getattr(self, "error_messages", _DJANGO_4_MESSAGES)
        return str(messages[key])

    def _whole_number(self, number: Any) -> int:
        """``number`` as an ``int`` of at least 1 (``validate_number`` without the count)."""
        try:
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(self._message("invalid_page")) from None
        if number < 1:
            raise EmptyPage(self._message("min_page"))
        return number


class ProductPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    django_paginator_class = SnapshotPaginator
