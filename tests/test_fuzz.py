"""Hostile and random input: rate parser, key builder, entry decoders; and no pickle anywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drf_redis_toolkit import cache_entries, client, keys
from drf_redis_toolkit.rates import MAX_LIMIT, MAX_WINDOW_SECONDS, Limit, parse_rate

PACKAGE = Path(__file__).resolve().parent.parent / "drf_redis_toolkit"
HOSTILE = st.one_of(
    st.text(max_size=5000),
    st.sampled_from(["*", "?", "[a-z]", "{tag}", "}{", "\r\n", "a:b:c", "\x00", "é" * 300]),
    st.text(alphabet="*?[]{}:\\\r\n ", max_size=200),
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    st.one_of(st.text(max_size=60), st.from_regex(r"\d{1,9}/\d{0,4}[a-z]{1,7}(,\d{1,5}/[smhd])?"))
)
def test_rate_parser_returns_limits_or_names_the_value(rate):
    try:
        limits = parse_rate(rate, setting="RATE")
    except ImproperlyConfigured as exc:
        assert "RATE" in str(exc) and repr(rate) in str(exc)
        return
    assert limits and all(isinstance(limit, Limit) for limit in limits)
    for limit in limits:
        assert 1 <= limit.limit <= MAX_LIMIT
        assert 1 <= limit.window <= MAX_WINDOW_SECONDS


def _check_key(key: str) -> None:
    assert key.startswith("drt:")
    assert len(key.encode()) < 256
    assert re.fullmatch(r"[A-Za-z0-9_.:\-{}]+", key), key
    # Exactly one hash tag, so every key lands in one well-defined cluster slot.
    assert key.count("{") == 1 and key.count("}") == 1 and key.index("{") < key.index("}")


@FUZZ
@given(scope=HOSTILE, ident=HOSTILE)
def test_throttle_keys_are_bounded_and_confined(scope, ident):
    key = keys.throttle_key("sw", scope, ident)
    _check_key(key)
    assert key != keys.throttle_key("sw", scope, ident + "x")


@FUZZ
@given(namespace=HOSTILE, material=HOSTILE)
def test_cache_and_generation_keys_are_bounded_and_confined(namespace, material):
    for key in (keys.generation_key(namespace), keys.cache_entry_key(namespace, material)):
        _check_key(key)
    entry = keys.cache_entry_key(namespace, material)
    assert keys.cache_lock_key(entry).startswith("drt:cl:")
    # The entry shares its namespace's generation slot.
    assert keys.namespace_tag(namespace) in entry
    assert keys.namespace_tag(namespace) in keys.generation_key(namespace)


@FUZZ
@given(value=HOSTILE)
def test_escaped_globs_match_only_themselves(value):
    from fnmatch import fnmatchcase

    escaped = keys.escape_glob(value)
    # Redis globs treat \x as a literal x: emulate with fnmatch's [x] classes.
    as_fnmatch = re.sub(r"\\(.)", lambda m: "[" + m.group(1) + "]", escaped, flags=re.S)
    assert fnmatchcase(value, as_fnmatch)
    if value:
        assert not fnmatchcase(value + "x", as_fnmatch)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=3000), st.builds(lambda b: b'1 2 "e"\n' + b, st.binary())))
def test_cache_entry_decoder_never_raises(raw):
    decoded = cache_entries.parse_entry(raw, None)
    assert decoded is None or (
        isinstance(decoded[0].headers, dict)
        and isinstance(decoded[0].status, int)
        and isinstance(decoded[1], bytes)
    )


@FUZZ
@given(raw=st.binary(max_size=2000))
def test_client_values_decode_to_json_or_text(raw):
    value = client.loads(raw)
    assert value is None or isinstance(value, (str, int, float, bool, list, dict))


@pytest.mark.parametrize("planted", [b"\x80\x04\x95cos\nsystem\n", b"cos\nsystem\n(S'id'\ntR."])
def test_a_pickle_planted_in_redis_is_just_bytes(backend, planted):
    backend.raw.set("drt:planted", planted)
    value = client.redis_client.get("planted")
    assert isinstance(value, str)  # decoded as text, never unpickled


def test_no_pickle_in_the_package():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(
            r"^\s*(import|from)\s+(c?pickle|marshal|shelve|dill)\b", path.read_text(), re.M
        )
        or "pickle.loads" in path.read_text()
    ]
    assert offenders == []
