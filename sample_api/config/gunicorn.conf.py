"""gunicorn settings for the sample API's Prometheus metrics (``--config`` this file).

With several workers, start gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` set to an
empty directory: every worker writes its counts there and ``/metrics`` adds
them up. ``child_exit`` drops a dead worker's live gauges.
"""

from drf_redis_toolkit.metrics import child_exit  # noqa: F401  (gunicorn's hook, by name)
