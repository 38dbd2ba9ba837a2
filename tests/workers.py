"""Worker threads whose death fails the test.

A thread that raises only makes pytest print a warning, and a test that then
counts what the survivors recorded can pass on a fraction of its load. Here
every exception a worker raises is kept, and ``join()`` fails the test with the
first one, or with the name of a worker that did not finish in time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Workers:
    """Run ``target(index)`` in ``count`` threads; ``join()`` fails on any death or hang."""

    def __init__(self, target: Callable[[int], Any], count: int, name: str = "worker") -> None:
        self.errors: list[tuple[int, BaseException]] = []
        self.finished: list[int] = []
        self._lock = threading.Lock()
        self._target = target
        self.threads = [
            threading.Thread(target=self._run, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]

    def _run(self, index: int) -> None:
        try:
            self._target(index)
        except BaseException as exc:  # noqa: BLE001  (reported by join())
            with self._lock:
                self.errors.append((index, exc))
        else:
            with self._lock:
                self.finished.append(index)

    def start(self) -> Workers:
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float = 60.0) -> None:
        """Wait for every worker; fail if one raised or is still running."""
        for thread in self.threads:
            thread.join(timeout=timeout)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"workers still running after {timeout}s: {alive}"
        if self.errors:
            index, exc = self.errors[0]
            raise AssertionError(
                f"{len(self.errors)} of {len(self.threads)} workers died; worker {index}: {exc!r}"
            ) from exc
        assert len(self.finished) == len(self.threads), (self.finished, len(self.threads))
