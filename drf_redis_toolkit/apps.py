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

        from drf_redis_toolkit import invalidation

        # Connect the post_save/post_delete/m2m_changed receivers for the models
        # named in INVALIDATION (dispatch_uid: wiring twice connects once).
        invalidation.setup()
