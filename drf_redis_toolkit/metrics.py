"""Prometheus metrics fed by the toolkit's signals (``pip install drf-redis-toolkit[metrics]``).

Turned on by ``DRF_REDIS_TOOLKIT = {"METRICS": True}``: the app's ``ready()``
calls ``connect()``, which creates the metrics and connects one receiver per
signal of ``drf_redis_toolkit.signals``. Serve them with ``metrics_view``.

Under gunicorn (several worker processes) each worker counts in its own
process; prometheus-client's multiprocess mode adds them up. Set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before gunicorn starts, and
use ``child_exit`` as gunicorn's ``child_exit`` hook so that a dead worker's
gauges stop counting (its counters are kept: what it counted happened).
``metrics_view`` reads that directory whenever the variable is set.
``docs/observability.md`` describes every metric.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from drf_redis_toolkit import signals

#: The ``drf_redis_toolkit_circuit_breaker_state`` value of each breaker state.
BREAKER_VALUES = {signals.CLOSED: 0, signals.HALF_OPEN: 1, signals.OPEN: 2}

_lock = threading.Lock()
_NUMBER_PART = re.compile(r"(?<=:)\d+(?=:|$)")


def namespace_label(namespace: str) -> str:
    """The ``namespace`` label: numeric parts become ``{id}`` (``product:12`` -> ``product:{id}``).

    One series per object would grow without bound; one per family of
    namespaces is what a dashboard shows anyway.
    """
    return _NUMBER_PART.sub("{id}", namespace)

_metrics: Metrics | None = None


class Metrics:
    """The toolkit's metrics, registered once per process in the default registry."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.throttle = Counter(
            "drf_redis_toolkit_throttle_decisions",
            "Throttle decisions, by scope and outcome (admitted, refused).",
            ["scope", "outcome"],
        )
        self.cache = Counter(
            "drf_redis_toolkit_cache_requests",
            "Cacheable requests, by namespace and outcome "
            "(hit, not_modified, miss, early_refresh, bypass).",
            ["namespace", "outcome"],
        )
        self.not_stored = Counter(
            "drf_redis_toolkit_cache_not_stored",
            "Computed answers that were not stored, by namespace and reason.",
            ["namespace", "reason"],
        )
        self.errors = Counter(
            "drf_redis_toolkit_redis_errors",
            "Failed Redis calls, by kind (unreachable, error) and exception class.",
            ["kind", "exception"],
        )
        self.breaker = Gauge(
            "drf_redis_toolkit_circuit_breaker_state",
            "The circuit breaker: 0 closed, 1 half-open, 2 open (the worst live worker).",
            multiprocess_mode="livemax",
        )
        self.backlog = Gauge(
            "drf_redis_toolkit_invalidation_backlog",
            "Invalidation names waiting for Redis after a failure (summed over live workers).",
            multiprocess_mode="livesum",
        )
        self.delivered = Counter(
            "drf_redis_toolkit_invalidation_backlog_delivered",
            "Invalidation names delivered from the backlog once Redis answered.",
        )
        self.outbox = Counter(
            "drf_redis_toolkit_invalidation_outbox_rows",
            "Outbox rows, by event (written, delivered).",
            ["event"],
        )
        self.breaker.set(0)
        self.backlog.set(0)

    # -- receivers ------------------------------------------------------------------

    def on_throttle(self, sender: Any, scope: str, allowed: bool, **kwargs: Any) -> None:
        self.throttle.labels(scope, "admitted" if allowed else "refused").inc()

    def on_cache(self, sender: Any, namespace: str, outcome: str, **kwargs: Any) -> None:
        self.cache.labels(namespace_label(namespace), outcome).inc()

    def on_not_stored(self, sender: Any, namespace: str, reason: str, **kwargs: Any) -> None:
        self.not_stored.labels(namespace_label(namespace), reason).inc()

    def on_error(self, sender: Any, unreachable: bool, **kwargs: Any) -> None:
        self.errors.labels("unreachable" if unreachable else "error", sender.__name__).inc()

    def on_breaker(self, sender: Any, new: str, **kwargs: Any) -> None:
        self.breaker.set(BREAKER_VALUES[new])

    def on_backlog(
        self,
        sender: Any,
        pending: int | None,
        delivered: int,
        outbox_written: int,
        outbox_delivered: int,
        **kwargs: Any,
    ) -> None:
        if pending is not None:
            self.backlog.set(pending)
        if delivered:
            self.delivered.inc(delivered)
        if outbox_written:
            self.outbox.labels("written").inc(outbox_written)
        if outbox_delivered:
            self.outbox.labels("delivered").inc(outbox_delivered)

    def receivers(self) -> list[tuple[Any, Any]]:
        return [
            (signals.throttle_decided, self.on_throttle),
            (signals.cache_outcome, self.on_cache),
            (signals.cache_not_stored, self.on_not_stored),
            (signals.redis_error, self.on_error),
            (signals.breaker_state_changed, self.on_breaker),
            (signals.invalidation_backlog, self.on_backlog),
        ]


def _uid(signal: Any) -> str:
    return f"drf_redis_toolkit.metrics.{id(signal)}"


def connect() -> Metrics:
    """Create the metrics (once per process) and connect their receivers (idempotent)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = Metrics()
        for signal, receiver in _metrics.receivers():
            signal.connect(receiver, weak=False, dispatch_uid=_uid(signal))
    return _metrics


def disconnect() -> None:
    """Disconnect the receivers (the metrics stay registered, with their values)."""
    with _lock:
        if _metrics is not None:
            for signal, _receiver in _metrics.receivers():
                signal.disconnect(dispatch_uid=_uid(signal))


def registry() -> Any:
    """The registry to expose: every worker's values when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected


def metrics_view(request: Any) -> Any:
    """A Django view answering the Prometheus text format (route it, and protect it)."""
    from django.http import HttpResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook: drop a dead worker's live gauges.

    In a gunicorn config file: ``from drf_redis_toolkit.metrics import child_exit``.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
