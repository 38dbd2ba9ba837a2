"""``manage.py drt_clear_cache``: ``clear_cache`` under a name no other app uses.

django-extensions' ``clear_cache`` shadows the toolkit's when it comes first in
``INSTALLED_APPS``; this name always reaches the toolkit's command.
"""

from drf_redis_toolkit.management.commands.clear_cache import Command as ClearCacheCommand


class Command(ClearCacheCommand):
    pass
