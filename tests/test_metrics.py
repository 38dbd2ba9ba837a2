"""The Prometheus exporter: exact counts in-process, and summed over gunicorn workers."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient, APIRequestFactory

pytest.importorskip("prometheus_client")

from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector

from drf_redis_toolkit import metrics
from drf_redis_toolkit.conf import VALIDATORS
from tests import sample_server
from tests.test_signals import Fixed

pytestmark = pytest.mark.django_db


@pytest.fixture
def exporter():
    metrics.connect()
    yield REGISTRY
    metrics.disconnect()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_counts_follow_a_known_sequence(backend, exporter, settings):
    settings.ROOT_URLCONF = "tests.caching_views"
    before = {
        outcome: value("drf_redis_toolkit_cache_requests_total", namespace="echo", outcome=outcome)
        for outcome in ("hit", "miss", "not_modified")
    }
    throttled = "drf_redis_toolkit_throttle_decisions_total"
    admitted = value(throttled, scope="signals", outcome="admitted")
    refused = value(throttled, scope="signals", outcome="refused")
    client = APIClient()
    first = client.get("/echo/?m=1")
    client.get("/echo/?m=1")
    client.get("/echo/?m=1")
    client.get("/echo/?m=1", HTTP_IF_NONE_MATCH=first["ETag"])
    request = APIRequestFactory().get("/")
    for _ in range(5):
        Fixed().allow_request(request, None)
    after = {
        outcome: value("drf_redis_toolkit_cache_requests_total", namespace="echo", outcome=outcome)
        for outcome in ("hit", "miss", "not_modified")
    }
    assert {k: after[k] - before[k] for k in after} == {"hit": 2, "miss": 1, "not_modified": 1}
    assert value(throttled, scope="signals", outcome="admitted") - admitted == 3
    assert value(throttled, scope="signals", outcome="refused") - refused == 2


def test_numeric_namespace_parts_share_one_series(backend, exporter, settings):
    settings.ROOT_URLCONF = "tests.caching_views"
    name = "drf_redis_toolkit_cache_requests_total"
    before = value(name, namespace="deco:{id}", outcome="miss")
    client = APIClient()
    for slot in ("1", "2", "3"):
        client.get(f"/deco/{slot}/")
    client.get("/deco/abc/")
    assert value(name, namespace="deco:{id}", outcome="miss") - before == 3
    assert value(name, namespace="deco:1", outcome="miss") == 0
    assert value(name, namespace="deco:abc", outcome="miss") >= 1


def test_metrics_view_serves_the_text_format(backend, exporter, settings):
    from django.test import RequestFactory

    response = metrics.metrics_view(RequestFactory().get("/metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"drf_redis_toolkit_circuit_breaker_state" in response.content


def test_the_setting_is_validated():
    assert VALIDATORS["METRICS"]("METRICS", True) is True
    with pytest.raises(ImproperlyConfigured, match="METRICS"):
        VALIDATORS["METRICS"]("METRICS", "yes")


@pytest.mark.slow
@pytest.mark.real_redis
def test_counts_from_every_gunicorn_worker_add_up(redis_server):
    """N requests over 2 workers: the cache outcomes in /metrics grow by exactly N."""
    multiproc = Path(tempfile.mkdtemp(prefix="drt-prom-"))
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "GUNICORN_CMD_ARGS": f"--config {sample_server.SAMPLE / 'config' / 'gunicorn.conf.py'}",
        "REDIS_KEY_PREFIX": "prom",
    }
    try:
        with sample_server.sample_api(redis_server.url, workers=2, threads=2, env=env) as base:

            def cache_total() -> float:
                text = sample_server.http(base + "/metrics")[1].decode()
                name = "drf_redis_toolkit_cache_requests_total"
                counts = sample_server.metric_samples(text, name)
                return sum(v for labels, v in counts.items() if "categories:all" in labels)

            def workers_counted() -> int:
                """How many worker processes have counted a categories request so far."""
                counted = 0
                for path in multiproc.glob("counter_*.db"):
                    for metric in MultiProcessCollector.merge([str(path)]):
                        if any(
                            sample.labels.get("namespace") == "categories:all" and sample.value
                            for sample in metric.samples
                        ):
                            counted += 1
                            break
                return counted

            before = cache_total()
            sent = 0
            # Until both workers served some (the kernel picks which accepts): bounded.
            while sent < 400 and (sent < 60 or workers_counted() < 2):
                batch = [sample_server.http(base + "/api/categories/")[0] for _ in range(20)]
                assert batch == [200] * 20
                sent += 20
            assert workers_counted() == 2
            assert cache_total() - before == sent
    finally:
        shutil.rmtree(multiproc, ignore_errors=True)
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None
