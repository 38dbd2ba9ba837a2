"""Ids that the database can hold, checked before any query.

Django before 5.0 lets SQLite raise ``OverflowError`` (a 500) for an integer
beyond 64 bits in a lookup; newer versions treat it as "no such row". These keep
the sample's answers the same on every supported Django: a 400 or a 404.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

#: Path segments that can name a row: at most 18 digits always fit in 64 bits.
ID_PATH_REGEX = r"[0-9]{1,18}"
_INT64 = range(-(2**63), 2**63)


def fits_in_int64(value: Any) -> bool:
    """``True`` unless ``value`` is an integer (or integer string) outside 64 bits."""
    try:
        return int(value) in _INT64
    except (TypeError, ValueError):
        return True  # not an integer at all: the field's own validation answers


class BoundedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A primary key field that answers "does not exist" for ids beyond 64 bits."""

    def to_internal_value(self, data: Any) -> Any:
        if not fits_in_int64(data):
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(data)
