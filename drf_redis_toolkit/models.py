"""The toolkit's one table: invalidations waiting for Redis (the outbox)."""

from __future__ import annotations

from django.db import models


class PendingInvalidation(models.Model):
    """Names a write invalidated while Redis was not known to be reachable.

    Written in the write's own transaction (or right after its commit when the
    delivery failed then), deleted by whichever process delivers it: the
    invalidation survives the process that made it. See
    ``drf_redis_toolkit.invalidation.outbox``.
    """

    #: ``{"namespaces": [...], "keys": [...]}`` as JSON text (any database, no JSON1 needed).
    names = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "pending invalidation"
        ordering = ("pk",)

    def __str__(self) -> str:
        return f"pending invalidation #{self.pk} ({self.created_at:%Y-%m-%d %H:%M:%S})"
