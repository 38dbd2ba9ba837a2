"""Namespace generations: never reused, O(1) bumps, on every backend."""

from __future__ import annotations

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.generations import bump_generations, read_generations


def test_read_creates_then_returns_the_same_generation(backend):
    first = read_generations("products:all", "product:1")
    assert set(first) == {"products:all", "product:1"}
    assert read_generations("products:all", "product:1") == first


def test_bump_moves_forward_and_only_the_named_namespace(backend):
    before = read_generations("a", "b")
    bumped = bump_generations("a")
    after = read_generations("a", "b")
    assert bumped["a"] == after["a"] > before["a"]
    assert after["b"] == before["b"]


def test_an_evicted_generation_is_never_reused(backend):
    old = bump_generations("ns")["ns"]
    backend.raw.delete(keyspace.generation_key("ns"))  # as if evicted under memory pressure
    assert read_generations("ns")["ns"] > old
    backend.raw.delete(keyspace.generation_key("ns"))
    assert bump_generations("ns")["ns"] > old


def test_odd_namespace_names_are_hashed_into_the_key(backend):
    name = "category:{7}:products*" + "x" * 500
    key = keyspace.generation_key(name)
    assert len(key) < 64 and "*" not in key and key.count("{") == 1
    gen = read_generations(name)[name]
    assert bump_generations(name)[name] > gen
