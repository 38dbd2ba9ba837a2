"""The Django app: validates settings at start-up and wires signal receivers."""

from __future__ import annotations

from django.apps import AppConfig


class DrfRedisToolkitConfig(AppConfig):
    name = "drf_redis_toolkit"
    label = "drf_redis_toolkit"
    verbose_name = "DRF Redis toolkit"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from drf_redis_toolkit import checks  # noqa: F401  (registers the system checks)
        from drf_redis_toolkit.conf import toolkit_settings

        # Fail at start-up, whatever the entry point (runserver, gunicorn, a
        # management command), with ImproperlyConfigured naming the bad key.
        toolkit_settings.check()

        if toolkit_settings.METRICS:  # the Prometheus exporter (docs/observability.md)
            from drf_redis_toolkit import metrics

            metrics.connect()

        from drf_redis_toolkit import invalidation

        # Connect the post_save/post_delete/m2m_changed receivers for the models
        # named in INVALIDATION (dispatch_uid: wiring twice connects once).
        invalidation.setup()

        from django.core.signals import request_started

        from drf_redis_toolkit.invalidation import outbox

        # Every process looks at the outbox when a request starts (rate-limited):
        # invalidations a dead process left there are delivered by the living.
        request_started.connect(
            outbox.on_request_started, dispatch_uid="drf_redis_toolkit.invalidation.outbox"
        )
