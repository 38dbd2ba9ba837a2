"""Response caching on every backend: what is stored, for whom, and when it is not served.

Tests tell a hit from a miss by the ``X-Cache`` header and by counting how often
the view's handler ran (``tests.caching_views.CALLS``), never by timing.
"""

from __future__ import annotations

import hashlib
import zlib

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.generics import ListAPIView
from rest_framework.test import APIClient

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.cache_stats import counters as _counters
from drf_redis_toolkit.caching import (
    CacheResponseMixin,
    invalidate_key,
    invalidate_namespace,
    invalidate_view,
    namespace_stats,
)
from tests.caching_views import CALLS
from tests.testapp.models import CachedWidget

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _urls(settings):
    settings.ROOT_URLCONF = "tests.caching_views"
    CALLS.clear()
    _counters.reset()  # in-process counts left by earlier tests belong to no backend


@pytest.fixture
def users(db):
    return (
        User.objects.create_user("alice", password="x"),
        User.objects.create_user("bob", password="x"),
    )


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user=user)
    return client


def entry_keys(backend) -> list[bytes]:
    return sorted(backend.raw.scan_iter(match=b"drt:c:*", count=1000))


def all_keys(backend) -> list[bytes]:
    return sorted(backend.raw.scan_iter(match=b"*", count=1000))


# -- hit and miss ----------------------------------------------------------------


def test_miss_then_hit_serves_identical_bytes_without_running_the_view(backend):
    CachedWidget.objects.create(name="spanner", price="9.99")
    client = APIClient()
    first = client.get("/widgets/")
    second = client.get("/widgets/")
    assert first.status_code == second.status_code == 200
    assert first["X-Cache"] == "MISS" and second["X-Cache"] == "HIT"
    assert second.content == first.content
    assert second["Content-Type"] == first["Content-Type"] == "application/json"
    assert second["ETag"] == first["ETag"]
    assert CALLS["widgets"] == 1
    assert len(entry_keys(backend)) == 1


def test_a_hit_runs_no_sql(backend):
    for index in range(5):
        CachedWidget.objects.create(name=f"w{index}", price=index)
    client = APIClient()
    with CaptureQueriesContext(connection) as miss:
        assert client.get("/widgets/")["X-Cache"] == "MISS"
    assert len(miss.captured_queries) >= 1
    with CaptureQueriesContext(connection) as hit:
        response = client.get("/widgets/")
    assert response["X-Cache"] == "HIT"
    assert len(hit.captured_queries) == 0


def test_head_is_answered_from_the_get_entry(backend):
    client = APIClient()
    get = client.get("/echo/?x=1")
    head = client.head("/echo/?x=1")
    assert head.status_code == 200
    assert head["X-Cache"] == "HIT"
    assert head["ETag"] == get["ETag"] and head["Content-Type"] == get["Content-Type"]
    assert head.content == b""
    assert CALLS["echo"] == 1


def test_head_first_stores_the_entry_get_then_hits(backend):
    client = APIClient()
    assert client.head("/echo/?h=1")["X-Cache"] == "MISS"
    get = client.get("/echo/?h=1")
    assert get["X-Cache"] == "HIT" and get.json() == {"query": [["h", ["1"]]]}


def test_query_parameter_order_does_not_matter_but_values_do(backend):
    client = APIClient()
    assert client.get("/echo/?a=1&b=2")["X-Cache"] == "MISS"
    assert client.get("/echo/?b=2&a=1")["X-Cache"] == "HIT"
    assert client.get("/echo/?a=1&b=3")["X-Cache"] == "MISS"
    # Repeated values keep their order: it can mean something (?sort=a&sort=b).
    assert client.get("/echo/?t=x&t=y")["X-Cache"] == "MISS"
    assert client.get("/echo/?t=y&t=x")["X-Cache"] == "MISS"
    assert CALLS["echo"] == 4


def test_negotiated_format_is_part_of_the_key(backend):
    client = APIClient()
    compact = client.get("/echo/?f=1", HTTP_ACCEPT="application/json")
    indented = client.get("/echo/?f=1", HTTP_ACCEPT="application/json; indent=4")
    assert compact["X-Cache"] == indented["X-Cache"] == "MISS"
    assert indented.content != compact.content and b"\n    " in indented.content
    again = client.get("/echo/?f=1", HTTP_ACCEPT="application/json")
    assert again["X-Cache"] == "HIT" and again.content == compact.content


def test_the_browsable_api_is_never_cached(backend, users):
    client = client_for(users[0])
    for _ in range(2):
        page = client.get("/echo/?f=2", HTTP_ACCEPT="text/html")
        assert page["Content-Type"].startswith("text/html")
        assert page["X-Cache"] == "MISS" and b"alice" in page.content
    assert entry_keys(backend) == []


def test_a_body_holding_a_csrf_token_is_never_cached(backend):
    client = APIClient()
    for _ in range(2):
        assert client.get("/echo/?csrf=1")["X-Cache"] == "MISS"
    assert CALLS["echo"] == 2


def test_language_is_part_of_the_key(backend):
    from django.utils import translation

    client = APIClient()
    with translation.override("en"):
        assert client.get("/echo/?l=1")["X-Cache"] == "MISS"
        assert client.get("/echo/?l=1")["X-Cache"] == "HIT"
    with translation.override("fr"):
        assert client.get("/echo/?l=1")["X-Cache"] == "MISS"


# -- per-user safety ---------------------------------------------------------------


def test_per_user_entries_never_reach_another_user_or_anonymous(backend, users):
    alice, bob = users
    as_alice, as_bob, anonymous = client_for(alice), client_for(bob), client_for()
    assert as_alice.get("/whoami/").json() == {"user": "alice"}
    for _ in range(2):
        assert as_bob.get("/whoami/").json() == {"user": "bob"}
        assert anonymous.get("/whoami/").json() == {"user": None}
    again = as_alice.get("/whoami/")
    assert again.json() == {"user": "alice"} and again["X-Cache"] == "HIT"
    assert as_bob.get("/whoami/")["X-Cache"] == "HIT"
    assert CALLS["whoami"] == 3  # one miss per identity, then hits


def test_per_user_responses_are_private_and_vary_on_credentials(backend, users):
    alice, _ = users
    for response in (client_for(alice).get("/whoami/"), client_for(alice).get("/whoami/")):
        assert "private" in response["Cache-Control"]
        vary = {v.strip().lower() for v in response["Vary"].split(",")}
        assert {"cookie", "authorization", "accept"} <= vary


def test_shared_mode_serves_one_entry_to_everybody(backend, users):
    alice, bob = users
    first = client_for(alice).get("/echo/?s=1")
    for client in (client_for(bob), client_for()):
        response = client.get("/echo/?s=1")
        assert response["X-Cache"] == "HIT" and response.content == first.content
        assert "private" not in response.get("Cache-Control", "")
    assert CALLS["echo"] == 1


# -- what is never cached -------------------------------------------------------------


def test_post_is_never_cached(backend):
    client = APIClient()
    for _ in range(2):
        response = client.post("/whoami/")
        assert response.status_code == 200 and "X-Cache" not in response
    assert CALLS["whoami-post"] == 2
    assert entry_keys(backend) == []


@pytest.mark.parametrize(
    "query",
    [
        "status=404",
        "status=500",
        "status=201",
        "cookie=1",
        "stream=1",
        "cc=no-store",
        "cc=no-cache",
        "cc=private",
        "vary=*",
    ],
)
def test_uncacheable_answers_run_the_view_every_time(backend, query):
    client = APIClient()
    for _ in range(3):
        response = client.get(f"/echo/?{query}")
        assert response["X-Cache"] == "MISS"
    assert CALLS["echo"] == 3
    assert entry_keys(backend) == []


def test_a_view_that_raises_is_not_cached_and_does_not_block_the_next_request(backend):
    client = APIClient()
    client.raise_request_exception = False
    for _ in range(2):
        assert client.get("/echo/?boom=1").status_code == 500
    assert CALLS["echo"] == 2
    assert entry_keys(backend) == []


def test_a_plain_apiview_with_object_permissions_is_not_cached(backend, users):
    client = client_for(users[0])
    for _ in range(2):
        assert client.get("/plain-object/").status_code == 200
    assert CALLS["plain-object"] == 2


# -- object permissions ------------------------------------------------------------


def test_a_hit_on_a_detail_route_rechecks_object_permissions(backend, users):
    alice, bob = users
    widget = CachedWidget.objects.create(name="mine", price=1, owner=alice)
    as_alice = client_for(alice)
    assert as_alice.get(f"/owned/{widget.pk}/")["X-Cache"] == "MISS"
    assert as_alice.get(f"/owned/{widget.pk}/")["X-Cache"] == "HIT"
    # Ownership moves without any invalidation: the cached 200 must not be served.
    CachedWidget.objects.filter(pk=widget.pk).update(owner=bob)
    assert as_alice.get(f"/owned/{widget.pk}/").status_code == 403
    assert as_alice.get(f"/owned/{widget.pk}/", HTTP_IF_NONE_MATCH="*").status_code == 403
    assert client_for(bob).get(f"/owned/{widget.pk}/").json()["owner"] == bob.pk
    assert CALLS["owned-retrieve"] == 2


# -- ETag and 304 ------------------------------------------------------------------


def test_etag_is_a_hash_of_the_bytes_and_if_none_match_gets_304_without_the_view(backend):
    client = APIClient()
    first = client.get("/echo/?e=1")
    etag = first["ETag"]
    assert etag == '"' + hashlib.sha256(first.content).hexdigest()[:32] + '"'
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = client.get("/echo/?e=1", HTTP_IF_NONE_MATCH=header)
        assert response.status_code == 304, header
        assert response["ETag"] == etag and response["X-Cache"] == "HIT"
        assert response.content == b""
    assert client.get("/echo/?e=1", HTTP_IF_NONE_MATCH='"stale"').status_code == 200
    assert CALLS["echo"] == 1


def test_the_etag_changes_exactly_when_the_data_does(backend):
    widget = CachedWidget.objects.create(name="a", price=1)
    client = APIClient()
    before = client.get("/widgets/")["ETag"]
    invalidate_namespace("widgets:all")
    assert client.get("/widgets/")["ETag"] == before  # recomputed, same bytes
    widget.name = "b"
    widget.save()
    invalidate_namespace("widgets:all")
    after = client.get("/widgets/", HTTP_IF_NONE_MATCH=before)
    assert after.status_code == 200 and after["ETag"] != before


def test_a_miss_answers_a_matching_if_none_match_with_304(backend):
    client = APIClient()
    etag = client.get("/echo/?m=1")["ETag"]
    invalidate_namespace("echo")
    response = client.get("/echo/?m=1", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304 and response["X-Cache"] == "MISS"


# -- invalidation --------------------------------------------------------------------


def test_invalidating_a_namespace_drops_its_entries_only(backend):
    widget = CachedWidget.objects.create(name="old", price=1)
    client = APIClient()
    assert client.get("/widgets/").json()[0]["name"] == "old"
    client.get("/echo/?n=1")
    CachedWidget.objects.filter(pk=widget.pk).update(name="new")
    assert client.get("/widgets/").json()[0]["name"] == "old"  # cached, not yet invalidated
    invalidate_namespace("widgets:all")
    fresh = client.get("/widgets/")
    assert fresh["X-Cache"] == "MISS" and fresh.json()[0]["name"] == "new"
    assert client.get("/echo/?n=1")["X-Cache"] == "HIT"


def test_an_answer_computed_before_an_invalidation_is_never_served_after_it(backend):
    """The race: read old row, writer commits and invalidates, reader stores the old row."""
    widget = CachedWidget.objects.create(name="old", price=1)
    client = APIClient()
    from tests import caching_views

    original = caching_views.WidgetList.get_queryset

    def racing_queryset(view):
        rows = list(original(view))  # the reader has read the old row...
        CachedWidget.objects.filter(pk=widget.pk).update(name="new")
        invalidate_namespace("widgets:all")  # ...then the writer commits and invalidates
        return rows

    caching_views.WidgetList.get_queryset = racing_queryset
    try:
        stale = client.get("/widgets/")
    finally:
        caching_views.WidgetList.get_queryset = original
    assert stale.json()[0]["name"] == "old"  # this request did read before the write
    fresh = client.get("/widgets/")
    assert fresh["X-Cache"] == "MISS" and fresh.json()[0]["name"] == "new"


def test_invalidate_view_drops_one_url_and_keeps_the_others(backend):
    client = APIClient()
    client.get("/echo/?page=1")
    client.get("/echo/?page=2")
    assert invalidate_view("http://testserver/echo/?page=1") is True
    assert client.get("/echo/?page=1")["X-Cache"] == "MISS"
    assert client.get("/echo/?page=2")["X-Cache"] == "HIT"
    assert invalidate_view("/echo/?page=3") is False
    assert invalidate_view("/no/such/url/") is False


def test_invalidate_view_finds_per_user_and_decorated_entries(backend, users):
    alice, _ = users
    client_for(alice).get("/whoami/")
    client_for().get("/whoami/")
    assert invalidate_view("/whoami/", user=alice) is True
    assert client_for(alice).get("/whoami/")["X-Cache"] == "MISS"
    assert client_for().get("/whoami/")["X-Cache"] == "HIT"
    APIClient().get("/deco/a/")
    assert invalidate_view("/deco/a/") is True
    assert APIClient().get("/deco/a/")["X-Cache"] == "MISS"


def test_invalidate_key_names_an_entry_by_its_hook_key(backend, users):
    from tests.caching_views import CategoryEcho

    alice, _ = users
    for client in (client_for(alice), client_for()):
        client.get("/category/?category=3")
        client.get("/category/?category=4&utm=x")  # the custom key ignores utm
    assert client_for().get("/category/?category=4")["X-Cache"] == "HIT"
    namespace = f"{CategoryEcho.__module__}.{CategoryEcho.__qualname__}"
    key = "products:category:3"
    assert invalidate_key(namespace, key, user=AnonymousUser()) is True
    assert invalidate_key(namespace, key, user=alice) is True
    assert invalidate_key(namespace, key, user=alice) is False
    assert invalidate_key(namespace, key) is False  # no shared entry: the view is per-user
    assert client_for(alice).get("/category/?category=3")["X-Cache"] == "MISS"
    assert client_for(alice).get("/category/?category=4")["X-Cache"] == "HIT"


# -- keys and storage ----------------------------------------------------------------


def test_a_10kb_query_string_makes_a_short_key(backend):
    client = APIClient()
    query = "q=" + "z" * 10_000 + "&{evil}=*[?]"
    assert client.get(f"/echo/?{query}")["X-Cache"] == "MISS"
    assert client.get(f"/echo/?{query}")["X-Cache"] == "HIT"
    keys = all_keys(backend)
    assert keys and all(len(key) < 256 for key in keys)
    assert all(b"z" * 50 not in key and b"evil" not in key for key in keys)


def test_entries_share_their_namespaces_hash_tag(backend):
    APIClient().get("/widgets/")
    (entry,) = entry_keys(backend)
    tag = keyspace.namespace_tag("widgets:all").encode()
    assert tag in entry and tag in keyspace.generation_key("widgets:all").encode()
    assert tag in keyspace.cache_lock_key(entry.decode()).encode()
    entry_key = keyspace.cache_entry_key("ns:{1}", "material")
    assert keyspace.cache_keys("ns:{1}", "material") == (
        keyspace.generation_key("ns:{1}"),
        entry_key,
        keyspace.cache_lock_key(entry_key),
    )


def test_large_bodies_are_stored_compressed_and_small_ones_raw(backend, settings):
    client = APIClient()
    big = client.get("/echo/?big=2000")
    small = client.get("/echo/?x=small")
    stored = {key: backend.raw.get(key) for key in entry_keys(backend)}
    sizes = sorted(len(value) for value in stored.values())
    assert sizes[1] < len(big.content) / 4  # "widget widget ..." compresses very well
    raw_small = next(v for v in stored.values() if len(v) == sizes[0])
    assert raw_small.endswith(small.content)
    assert client.get("/echo/?big=2000").content == big.content


def test_entries_are_json_metadata_and_bytes_never_pickle(backend):
    response = APIClient().get("/echo/?big=500")
    (key,) = entry_keys(backend)
    head, meta, body = backend.raw.get(key).split(b"\n", 2)
    import json

    meta = json.loads(meta)
    assert head.split(b" ", 2)[2].decode() == response["ETag"] and meta["s"] == 200
    assert zlib.decompress(body) == response.content
    assert b"\x80\x04" not in head + body[:2]  # no pickle protocol header


def test_a_corrupt_entry_is_a_miss_and_is_replaced(backend):
    client = APIClient()
    good = client.get("/echo/?c=1")
    (key,) = entry_keys(backend)
    gen_line = backend.raw.get(key).split(b"\n", 1)[0]
    for garbage in (
        gen_line + b"\n{not json\nbody",
        gen_line + b'\n{"s":200,"h":{},"e":"x","z":1,"n":4}\nnope',
        gen_line + b'\n{"s":200,"h":{"Bad\\nName":"v"},"e":"x","z":0,"n":2}\nok',
        b"\x80\x04\x95 pickled junk",
    ):
        backend.raw.set(key, garbage)
        response = client.get("/echo/?c=1")
        assert response.status_code == 200 and response["X-Cache"] == "MISS"
        assert response.content == good.content
        assert client.get("/echo/?c=1")["X-Cache"] == "HIT"


def test_a_body_held_in_process_is_used_only_while_redis_has_the_same_etag(backend):
    from drf_redis_toolkit.cache_entries import local_bodies as _local_bodies

    client = APIClient()
    good = client.get("/echo/?big=300")
    (key,) = entry_keys(backend)
    head, meta, body = backend.raw.get(key).split(b"\n", 2)
    # Same head and metadata, damaged body: Redis answers "unchanged" (state 5)
    # without sending the body, and this process still holds the right bytes.
    backend.raw.set(key, head + b"\n" + meta + b"\n" + b"\x00" * len(body), keepttl=True)
    held = client.get("/echo/?big=300")
    assert held["X-Cache"] == "HIT" and held.content == good.content
    _local_bodies.clear()  # another process: it needs the body, finds it corrupt
    fresh = client.get("/echo/?big=300")
    assert fresh["X-Cache"] == "MISS" and fresh.content == good.content
    invalidate_namespace("echo")  # and a held body never outlives an invalidation
    assert client.get("/echo/?big=300")["X-Cache"] == "MISS"


def test_a_redis_error_on_the_cache_path_is_a_miss(backend):
    client = APIClient()
    client.get("/echo/?w=1")
    (key,) = entry_keys(backend)
    backend.raw.delete(key)
    backend.raw.rpush(key, b"not a string")  # WRONGTYPE inside the lookup script
    for _ in range(2):
        response = client.get("/echo/?w=1")
        assert response.status_code == 200 and response["X-Cache"] == "MISS"
    assert CALLS["echo"] == 3


def test_decorator_on_an_apiview_and_on_a_viewset_action(backend, users):
    client = APIClient()
    assert client.get("/deco/a/").json() == {"slot": "a", "n": 1}
    assert client.get("/deco/a/")["X-Cache"] == "HIT"
    assert client.get("/deco/b/")["X-Cache"] == "MISS"
    invalidate_namespace("deco:a")
    assert client.get("/deco/a/").json() == {"slot": "a", "n": 3}
    as_alice = client_for(users[0])
    assert as_alice.get("/owned/count/")["X-Cache"] == "MISS"
    assert client_for(users[1]).get("/owned/count/")["X-Cache"] == "HIT"  # per_user=False
    assert CALLS["owned-count"] == 1


def test_namespace_stats_count_hits_and_misses(backend):
    client = APIClient()
    for _ in range(3):
        client.get("/echo/?st=1")
    client.get("/widgets/")
    stats = namespace_stats()
    assert stats["echo"] == {"hits": 2, "misses": 1, "hit_rate": 66.7}
    assert stats["widgets:all"]["misses"] == 1
    assert namespace_stats()["echo"]["hits"] == 2  # flushing twice does not double count


def test_early_refresh_recomputes_a_hot_entry_before_it_expires(backend):
    client = APIClient()
    assert client.get("/refreshing/").json() == {"n": 1}
    (key,) = entry_keys(backend)
    value = backend.raw.get(key)
    head, rest = value.split(b"\n", 1)
    gen, _, etag = head.split(b" ", 2)
    # As if computing it took far longer than the time it has left: refresh now.
    backend.raw.set(key, gen + b" 999999999999 " + etag + b"\n" + rest, px=50_000)
    refreshed = client.get("/refreshing/")
    assert refreshed["X-Cache"] == "MISS" and refreshed.json() == {"n": 2}
    # A cheap entry far from expiry is served.
    assert client.get("/refreshing/")["X-Cache"] == "HIT"


def test_the_mixin_must_come_before_the_view_class():
    with pytest.raises(ImproperlyConfigured, match="before the DRF view class"):

        class Wrong(ListAPIView, CacheResponseMixin):
            pass
