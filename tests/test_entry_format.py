"""The stored entry read back by a process that did not write it.

Each process keeps the bodies it stored or served (``cache_entries.local_bodies``),
and a hit whose ETag matches a body it holds never parses the entry again. So the
entry format itself (status line, JSON metadata, compression flag, body length,
the hashed-ETag flag) is only read when *another* worker wrote the entry, or the
body was evicted: these tests clear the process's bodies between the store and
the hit, the way a second gunicorn worker sees the entry, on every backend.
"""

from __future__ import annotations

import zlib

import pytest
from django.http import HttpResponse
from django.test import override_settings
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit.cache_entries import local_bodies
from drf_redis_toolkit.caching import CacheResponseMixin

pytestmark = pytest.mark.django_db

factory = APIRequestFactory()
RUNS: list[str] = []


class Text(CacheResponseMixin, APIView):
    """Plain bytes with newlines (JSON never has a raw one), a header of the view's
    own, and headers that describe one exchange (never stored)."""

    cache_namespace = "entryfmt"

    def get(self, request):
        RUNS.append(request.path)
        size = int(request.query_params.get("size", "60"))
        line = b"line of text\n"
        body = (line * (size // len(line) + 1))[:size]
        response = HttpResponse(body, content_type="text/plain; charset=utf-8")
        response["X-Widget"] = "kept"
        response["Date"] = "Mon, 01 Jan 2001 00:00:00 GMT"  # e.g. copied from an upstream
        response["Age"] = "7"
        return response


view = Text.as_view()


def get(path: str, **headers: str):
    response = view(factory.get(path, **headers))
    return response


def entry_key(backend) -> bytes:
    (key,) = backend.raw.scan_iter(match=b"drt:c:*entryfmt*", count=1000)
    return key


@pytest.fixture(autouse=True)
def _fresh():
    RUNS.clear()
    local_bodies.clear()
    yield
    local_bodies.clear()


@pytest.mark.parametrize("size", [60, 5000], ids=["plain", "compressed"])
def test_another_worker_serves_the_stored_answer_byte_for_byte(backend, size):
    path = f"/entry?size={size}"
    first = get(path)
    assert first["X-Cache"] == "MISS"
    local_bodies.clear()  # another worker: it holds no body
    second = get(path)
    assert second["X-Cache"] == "HIT" and RUNS == ["/entry"]
    assert second.status_code == 200
    assert second.content == first.content and len(second.content) == size
    assert second.content.count(b"\n") == first.content.count(b"\n") > 1
    assert second["ETag"] == first["ETag"]
    assert second["Content-Type"] == "text/plain; charset=utf-8"
    assert second["X-Widget"] == "kept"
    # Headers of one exchange are not part of the stored answer.
    assert not second.has_header("Date") and not second.has_header("Age")
    # The worker now holds the body (its ETag hashes the bytes): the next hit parses nothing.
    held = local_bodies.get(entry_key(backend).decode())
    assert held is not None and held.body == first.content


def test_the_body_is_compressed_from_the_threshold_on_and_not_below(backend):
    threshold = 600
    with override_settings(
        DRF_REDIS_TOOLKIT={**backend.settings, "CACHE_COMPRESS_MIN_BYTES": threshold}
    ):
        for size, compressed in ((threshold - 1, False), (threshold, True)):
            backend.raw.flushall()
            first = get(f"/entry?size={size}")
            stored = backend.raw.get(entry_key(backend)).split(b"\n", 2)[2]
            assert (stored != first.content) is compressed, size
            if compressed:
                assert zlib.decompress(stored) == first.content
            local_bodies.clear()
            second = get(f"/entry?size={size}")
            assert second["X-Cache"] == "HIT" and second.content == first.content


def test_a_client_holding_the_etag_gets_a_304_from_a_worker_without_the_body(backend):
    """Redis then sends only the entry's head (no body): that is not a short entry."""
    first = get("/entry")
    local_bodies.clear()
    again = get("/entry", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304 and again["ETag"] == first["ETag"]
    local_bodies.clear()
    assert get("/entry")["X-Cache"] == "HIT"  # the entry is still there
    assert RUNS == ["/entry"]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda meta: meta.replace(b'"s":200', b'"s":"200"'), id="status-not-int"),
        pytest.param(
            lambda meta: meta.replace(b'"h":{', b'"h":[{').replace(b"},", b"}],", 1),
            id="headers-not-dict",
        ),
        pytest.param(lambda meta: meta.replace(b'"z":0', b'"z":1'), id="flagged-compressed"),
        pytest.param(lambda meta: meta.replace(b'"n":60', b'"n":61'), id="body-length"),
    ],
)
def test_an_entry_whose_metadata_does_not_hold_is_a_miss_recomputed(backend, tamper):
    first = get("/entry")
    key = entry_key(backend)
    head, meta, body = backend.raw.get(key).split(b"\n", 2)
    tampered = tamper(meta)
    assert tampered != meta
    backend.raw.set(key, b"\n".join((head, tampered, body)), keepttl=True)
    local_bodies.clear()
    again = get("/entry")
    assert again.status_code == 200 and again["X-Cache"] == "MISS"
    assert again.content == first.content and len(RUNS) == 2
    local_bodies.clear()
    assert get("/entry")["X-Cache"] == "HIT"  # stored anew, whole
