"""Run one piece of request logic synchronously or on an event loop: two thin shells.

The cache's request path (``caching.py``) is written once, as a generator that
*yields* what it needs done (a Lua script, a ``DEL``, a pause, a call into the
view) and receives the answer, or the exception, back. It never touches a
socket itself. ``run_sync`` carries those steps out with the shared redis-py
client (``guarded()``); ``run_async`` with the event loop's ``redis.asyncio``
client (``aguarded()``), awaiting the view's coroutine handlers and running
its blocking calls (``get_object()``, a sync handler) in a worker thread. So
the decisions (keys, states, what to store, failure policy) exist once, and
the event loop never blocks on Redis: redis-py's own pattern of commands
defined once and run by two clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol, TypeVar

from asgiref.sync import iscoroutinefunction, sync_to_async

from drf_redis_toolkit.connection import aguarded, guarded
from drf_redis_toolkit.scripts import arun_script, run_script

T = TypeVar("T")


class Script:
    """Run ``lua/<name>.lua`` on ``keys`` and ``args``; the answer is the script's reply."""

    __slots__ = ("args", "keys", "name")

    def __init__(self, name: str, keys: list[Any], args: list[Any]) -> None:
        self.name, self.keys, self.args = name, keys, args

    def run(self) -> Any:
        with guarded() as client:
            return run_script(self.name, client, self.keys, self.args)

    async def arun(self) -> Any:
        async with aguarded() as client:
            return await arun_script(self.name, client, self.keys, self.args)


class Delete:
    """``DEL`` one key; the answer is the number of keys deleted."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def run(self) -> Any:
        with guarded() as client:
            return client.delete(self.key)

    async def arun(self) -> Any:
        async with aguarded() as client:
            return await client.delete(self.key)


class Offload:
    """A blocking call of the toolkit's own (not the view's), such as flushing the
    hit/miss counters: in this thread, or on an event loop in a worker thread of
    the loop's default executor, so the loop never waits on its socket."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[[], Any]) -> None:
        self.func = func

    def run(self) -> Any:
        return self.func()

    async def arun(self) -> Any:
        return await asyncio.to_thread(self.func)


class Sleep:
    """Pause (waiting for another request's single-flight lock)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self) -> None:
        time.sleep(self.seconds)

    async def arun(self) -> None:
        await asyncio.sleep(self.seconds)


#: ``is_async()``'s answers for the functions behind bound methods (a view's handler
#: is a new bound method on every request, its function is not); bounded.
_ASYNC_FUNCTIONS: dict[Any, bool] = {}
_ASYNC_FUNCTIONS_MAX = 1024


def is_async(func: Any) -> bool:
    """Whether calling ``func`` gives a coroutine: an ``async def`` (also behind a
    ``functools.partial``) or a callable marked as one (Django's async middleware chain).

    A bound method's answer is its function's, kept: asgiref's check inspects the
    code and its markers, about a microsecond and a half on every cached request.
    """
    function = getattr(func, "__func__", None)
    if function is None:
        return _is_async(func)
    try:
        known = _ASYNC_FUNCTIONS.get(function)
    except TypeError:  # an unhashable ``__func__``: not a plain bound method
        return _is_async(func)
    if known is None:
        known = _is_async(func)
        if len(_ASYNC_FUNCTIONS) >= _ASYNC_FUNCTIONS_MAX:
            _ASYNC_FUNCTIONS.clear()
        _ASYNC_FUNCTIONS[function] = known
    return known


def _is_async(func: Any) -> bool:
    return iscoroutinefunction(func) or iscoroutinefunction(getattr(func, "func", None))


class Call:
    """Call into the view: a handler, ``get_object()``.

    On the event loop a coroutine function is awaited; a plain function may
    block (the ORM), so it runs in a worker thread (``sync_to_async``, in the
    thread Django's ORM expects).
    """

    __slots__ = ("args", "func", "kwargs")

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.func, self.args, self.kwargs = func, args, kwargs

    def run(self) -> Any:
        return self.func(*self.args, **self.kwargs)

    async def arun(self) -> Any:
        func = self.func
        if is_async(func):
            return await func(*self.args, **self.kwargs)
        return await sync_to_async(func)(*self.args, **self.kwargs)


class Step(Protocol):
    """What a flow yields: one piece of I/O, runnable both ways."""

    def run(self) -> Any: ...

    async def arun(self) -> Any: ...


Flow = Generator[Step, Any, T]


class _Progress:
    """Where a flow is: the answer (or error) of its last step, its result once done."""

    __slots__ = ("error", "flow", "result", "value")

    def __init__(self, flow: Flow[Any]) -> None:
        self.flow = flow
        self.value: Any = None
        self.error: Exception | None = None
        self.result: Any = None

    def next_step(self) -> Step | None:
        """Hand the last answer in; the next step, or ``None`` when the flow returned."""
        try:
            if self.error is None:
                return self.flow.send(self.value)
            return self.flow.throw(self.error)
        except StopIteration as stop:
            self.result = stop.value
            return None


def run_sync(flow: Flow[T]) -> T:
    """Carry ``flow`` out in this thread; its steps' exceptions are raised inside it."""
    progress = _Progress(flow)
    while (step := progress.next_step()) is not None:
        try:
            progress.value, progress.error = step.run(), None
        except Exception as exc:  # noqa: BLE001 - handed to the flow, which decides
            progress.value, progress.error = None, exc
    return progress.result  # type: ignore[no-any-return]


async def run_async(flow: Flow[T]) -> T:
    """Carry ``flow`` out on the running event loop, awaiting every step."""
    progress = _Progress(flow)
    while (step := progress.next_step()) is not None:
        try:
            progress.value, progress.error = await step.arun(), None
        except Exception as exc:  # noqa: BLE001 - handed to the flow, which decides
            progress.value, progress.error = None, exc
    return progress.result  # type: ignore[no-any-return]
