"""One ``check_throttles`` round of one view: the toolkit throttles' shared decisions.

DRF's ``check_throttles()`` calls every throttle of a view, then raises
``Throttled`` if any refused; the ones that admitted have recorded the request
already (DRF #6491). The toolkit's throttles of one such call (a *round*) share
a ``ThrottleRound``: a refusal takes back what the round recorded, and nothing
else. Rounds are kept per view instance (one dispatch), so a nested or repeated
dispatch of one request is a separate round, and a request that was served is
never uncounted. ``RateLimitHeadersMiddleware`` collects the rounds of each pass
to write the headers of the view that answered.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.exceptions import RedisUnavailable

#: Where a view (or, without a view, the request) keeps its current throttle round.
ROUND_ATTR = "_drf_redis_toolkit_throttle_round"
#: Where ``RateLimitHeadersMiddleware`` collects the rounds of one pass through it.
PASS_ATTR = "_drf_redis_toolkit_throttle_rounds"

#: Orders throttle creations and round starts: a throttle made after a round
#: began cannot belong to it (DRF's ``get_throttles()`` makes a round's throttles
#: before calling any of them).
_sequence = itertools.count()


def creation_number() -> int:
    """A number for a new throttle, later than every round started so far."""
    return next(_sequence)


#: How far up from ``allow_request`` the view's own method may be: throttle frames
#: (``super()`` calls, delegation), decorators' wrappers, mutmut's trampolines.
_MAX_DEPTH = 32


def _caller(frame: FrameType | None, view: Any) -> FrameType | None:
    """The frame of ``view``'s own method that called the throttles (DRF's ``check_throttles``).

    The nearest frame up the stack whose first argument is ``view``: whatever
    runs in between (``allow_request`` of a subclass calling ``super()``, a
    throttle delegating to another, a decorator's wrapper under another name, a
    mutation tester's trampoline) is not the view's, so it is passed by. A
    decorated ``check_throttles`` finds the inner, real one (it calls
    ``throttled()``); a view's own throttle loop under another name is found
    too. Names are not compared: wrappers rename. ``None`` without a view, or
    when no frame of the view is near (a throttle called by hand).
    """
    if view is None:
        return None
    for _ in range(_MAX_DEPTH):
        if frame is None:
            return None
        code = frame.f_code
        if code.co_argcount and frame.f_locals.get(code.co_varnames[0]) is view:
            return frame
        frame = frame.f_back
    return None


@dataclass(eq=False, slots=True)
class ThrottleRound:
    """The toolkit's decisions in one ``check_throttles`` round of one view.

    DRF calls every throttle of the round, then raises ``Throttled`` if any
    refused. A refusal takes back what the toolkit's throttles recorded *in this
    round only* (DRF #6491), and the throttles after it only report. Nothing
    recorded in another round (an earlier check, a nested view, an earlier
    dispatch of the same request object) is ever taken back: those requests
    were served.
    """

    request: Any
    view: Any
    started: int
    #: The view's frame running this round (``check_throttles``, see ``_caller``). Held,
    #: not just its ``id()``: a later call's frame may reuse a freed frame's address.
    #: Dropped once the round is over (refused, superseded, or its middleware pass ended).
    caller: FrameType | None = None
    decisions: list[ratelimit.Decision] = field(default_factory=list)
    members: list[Any] = field(default_factory=list)
    refused: bool = False
    #: Answers decided ahead for the round's later throttles, by ``(kind, key)``.
    pending: dict[tuple[str, str], tuple[ratelimit.Question, ratelimit.Decision]] = field(
        default_factory=dict
    )

    def decide(self, questions: list[ratelimit.Question]) -> ratelimit.Decision:
        """Decide the first of ``questions`` now, the others ahead of their throttles' calls.

        All of them in one round trip (``ratelimit.decide_many``): when one
        refuses, none is recorded. The later throttles of the round read their
        answers with ``answer()``.
        """
        decisions = ratelimit.decide_many(questions)
        self.decisions.extend(decisions)
        for question, decision in zip(questions[1:], decisions[1:], strict=True):
            self.pending[(question.kind, question.key)] = (question, decision)
        return decisions[0]

    def answer(
        self, kind: str, key: str, limits: Any, cost: int, record: bool
    ) -> ratelimit.Decision | None:
        """The answer decided ahead for this question, or ``None``: decide it now.

        Asked before the question is built (``ratelimit.ask``): an answer found
        needs none.
        """
        found = self.pending.pop((kind, key), None)
        if found is None:
            return None
        asked, decision = found
        if asked.limits == limits and asked.cost == cost:
            if record or not decision.recorded:
                return decision
        # Asked otherwise ahead (a hook that answered differently the second time):
        # take that answer back and let the throttle decide for itself.
        self.decisions.remove(decision)
        ratelimit.undo([decision])
        return None

    def admits(self, throttle: Any, request: Any) -> bool:
        """Whether ``throttle``, called with ``request``, is part of this round."""
        created = getattr(throttle, "_round_sequence", None)
        return (
            request is self.request
            and created is not None
            and created < self.started
            and not any(member is throttle for member in self.members)
        )

    def refuse(self) -> None:
        """A throttle refused: take back what this round's throttles recorded."""
        if self.refused:
            return
        self.refused = True
        self.caller = None
        try:
            ratelimit.undo(self.decisions)
        except RedisUnavailable:
            pass  # the records expire with their window; nothing more to do

    def refused_by_caller(self, frame: FrameType) -> bool:
        """Whether ``frame`` (calling the view's ``throttled()``) is this round's caller."""
        return self.caller is not None and frame is self.caller

    def close(self) -> None:
        """The round is over: no later refusal can be its own."""
        self.caller = None


class _RefusalHook:
    """Stands in for one view instance's ``throttled()`` while its round is open.

    DRF's ``check_throttles`` calls ``view.throttled()`` when any throttle of
    the round refused, the toolkit's or another's. Called from the round's own
    ``check_throttles`` call, it takes the round back before DRF raises
    ``Throttled``; called from anywhere else (a handler answering 429 itself),
    it changes nothing. It lives on the view instance of one dispatch only.
    """

    def __init__(self, original: Any, round_: ThrottleRound) -> None:
        self.original = original
        self.round = round_

    def __call__(self, request: Any, wait: Any) -> Any:
        if self.round.refused_by_caller(sys._getframe(1)):
            self.round.refuse()
        return self.original(request, wait)


def _arm(view: Any, round_: ThrottleRound) -> None:
    original = getattr(view, "throttled", None)
    if not callable(original):
        return
    if isinstance(original, _RefusalHook):
        original = original.original
    try:
        view.throttled = _RefusalHook(original, round_)
    except AttributeError:
        pass  # a view that takes no attributes: toolkit refusals still take back


def current_round(throttle: Any, request: Any, view: Any) -> ThrottleRound:
    """The round ``throttle`` takes part in: the view's current one, or a new one.

    A round belongs to one view instance (one dispatch) and one DRF request; a
    throttle joins it only if it was created before the round began and has not
    decided in it yet, so a second ``check_throttles`` on the same view starts a
    new round. Without a view (a throttle called by hand) the round lives on
    the request.
    """
    holder = view if view is not None else request
    round_ = getattr(holder, ROUND_ATTR, None)
    if not isinstance(round_, ThrottleRound) or not round_.admits(throttle, request):
        if isinstance(round_, ThrottleRound):
            round_.close()
        round_ = ThrottleRound(
            request, view, started=creation_number(), caller=_caller(sys._getframe(1), view)
        )
        try:
            setattr(holder, ROUND_ATTR, round_)
        except AttributeError:
            pass
        if view is not None:
            _arm(view, round_)
        http_request = getattr(request, "_request", request)
        collected = getattr(http_request, PASS_ATTR, None)
        if isinstance(collected, list):
            collected.append(round_)
    round_.members.append(throttle)
    return round_
