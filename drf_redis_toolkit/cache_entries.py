"""The stored form of a cached response, and the per-process body cache.

An entry is ``"<generation> <compute ms> <etag>\n<JSON metadata>\n<body>"``: the
status and the headers that describe the resource as JSON, the rendered bytes as
they are (zlib-compressed from ``CACHE_COMPRESS_MIN_BYTES`` on). Never pickle, so
bytes planted in Redis cannot run code; anything that does not parse is corrupt,
which the cache treats as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zlib
from collections import OrderedDict

from django.http.response import HttpResponseBase

from drf_redis_toolkit.conf import CONNECTION_KEYS, toolkit_settings

#: zlib level: 1 costs half the CPU of the default on a miss and decompresses faster,
#: for a few percent more bytes.
COMPRESS_LEVEL = 1
#: Bytes of decompressed bodies each process keeps, by entry key and ETag, so that a
#: hot entry crosses the network and zlib once per process, not once per request.
LOCAL_BODIES_MAX_BYTES = 8 * 1024 * 1024
#: Bodies larger than this are never kept in process.
LOCAL_BODY_MAX_BYTES = 512 * 1024
#: Headers that describe one exchange, not the resource: never stored.
UNSTORED_HEADERS = frozenset(
    {
        "set-cookie",
        "date",
        "age",
        "content-length",
        "etag",
        "x-cache",
        "connection",
        "keep-alive",
        "transfer-encoding",
    }
)


def make_etag(body: bytes) -> str:
    """A strong ETag that changes exactly when the bytes do (SHA-256 is hardware-fast)."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def encode_entry(
    gen: int, compute_ms: int, response: HttpResponseBase, body: bytes, etag: str, hashed: bool
) -> tuple[bytes, bytes]:
    """Return ``(entry, metadata)``: ``"<gen> <ms> <etag>\\n<metadata>\\n<body>"``."""
    headers = {k: v for k, v in response.items() if k.lower() not in UNSTORED_HEADERS}
    compressed = 0
    if len(body) >= toolkit_settings.CACHE_COMPRESS_MIN_BYTES:
        packed = zlib.compress(body, COMPRESS_LEVEL)
        if len(packed) < len(body):
            body, compressed = packed, 1
    meta = json.dumps(
        {"s": response.status_code, "h": headers, "z": compressed, "n": len(body), "x": hashed},
        separators=(",", ":"),
    ).encode()  # ASCII-only: never contains the newline that ends it
    return b"%d %d %s\n%s\n%s" % (gen, compute_ms, etag.encode(), meta, body), meta


class Entry:
    """A decoded entry: its ETag, metadata (raw and parsed) and, once known, its body."""

    __slots__ = ("body", "etag", "hashed", "headers", "meta_raw", "size", "status")

    def __init__(
        self,
        etag: str,
        meta_raw: bytes,
        status: int,
        headers: dict[str, str],
        hashed: bool,
        body: bytes | None,
    ) -> None:
        self.etag, self.meta_raw, self.status, self.headers = etag, meta_raw, status, headers
        self.hashed, self.body = hashed, body
        self.size = len(body or b"") + len(meta_raw) + 200


def parse_entry(raw: bytes, known: Entry | None) -> tuple[Entry, bytes, bool] | None:
    """Split an entry; ``None`` if corrupt. Returns the entry, its stored body and its zlib flag.

    When ``known`` (a body this process already holds) has the same ETag and
    metadata, its parsed headers and body are reused: no JSON, no zlib.
    """
    try:
        head, meta_raw, stored = raw.split(b"\n", 2)
        etag = head.split(b" ", 2)[2].decode()
        if known is not None and known.etag == etag and known.meta_raw == meta_raw:
            return known, b"", False
        meta = json.loads(meta_raw)
        status, headers, compressed = meta["s"], meta["h"], meta["z"]
        if (
            not isinstance(status, int)
            or not isinstance(headers, dict)
            or (stored and len(stored) != meta["n"])
        ):
            return None
        return Entry(etag, meta_raw, status, headers, meta.get("x") == 1, None), stored, compressed
    except (ValueError, KeyError, TypeError, IndexError):
        return None


class LocalBodies:
    """A small per-process LRU of decompressed bodies, keyed by entry key.

    Only consulted when Redis says the entry's ETag is still the one held here
    (``cache_get.lua`` state 5), and only for ETags that hash the bytes: so it can
    never serve bytes Redis would not have, and invalidation stays immediate.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        if not entry.hashed or entry.body is None or len(entry.body) > LOCAL_BODY_MAX_BYTES:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = entry
            self._bytes += entry.size
            while self._bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.size

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


local_bodies = LocalBodies(LOCAL_BODIES_MAX_BYTES)


def _after_fork_in_child() -> None:
    # A forked worker gets a fresh lock: another thread of the parent may have held it.
    local_bodies._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _on_settings_change(changed: set[str]) -> None:
    if changed & (CONNECTION_KEYS | {"KEY_PREFIX"}):
        local_bodies.clear()  # bodies belong to the Redis (and prefix) they came from


toolkit_settings.on_change(_on_settings_change)
