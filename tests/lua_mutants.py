"""Lua mutation testing: apply each listed mutation to a script, run the tests that cover it.

A mutant is *killed* when those tests fail with it in place. Run it with
``python -m tests.lua_mutants`` (``make mutate`` does, and CI through
``tests/test_lua_mutants.py``); ``--script NAME`` restricts it, ``--list``
prints the mutants. The source tree is never edited: ``get_script`` is made to
hand out the mutated script (in every module that imported it), and the covering
tests run with ``pytest.main`` in this process, so a mutant costs only its tests'
run time. Each mutation names the exact text it replaces, so a script edited
since fails loudly ("no longer applies") instead of silently testing nothing.

The covering tests run on fakeredis (its Lua is real Lua 5.1, and it needs no
server start); ``--backends`` adds the real server and cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "drf_redis_toolkit" / "lua"


@dataclass(frozen=True)
class Mutant:
    script: str
    name: str
    old: str
    new: str
    #: Why no test can tell it from the original (it is then run, but not required to die).
    equivalent: str = ""

    def apply(self, source: str) -> str:
        if source.count(self.old) != 1:
            raise ValueError(f"{self.script}/{self.name} no longer applies: {self.old!r}")
        return source.replace(self.old, self.new)


THROTTLE_TESTS = (
    "tests/test_throttling.py",
    "tests/test_throttle_extras.py",
    "tests/test_ratelimit_headers.py",
)
EDGES = "tests/test_lua_edges.py"
CACHE_TESTS = (
    EDGES,
    "tests/test_caching_seams.py",
    "tests/test_caching_options.py",
    "tests/test_caching.py",
    "tests/test_mixins.py",
    "tests/test_caching_failures.py",
)
GENERATION_TESTS = (EDGES, "tests/test_generations.py", "tests/test_caching.py")
ROUND_TESTS = (
    "tests/test_throttle_round_edges.py",
    "tests/test_throttle_round_trips.py",
    "tests/test_throttle_rounds.py",
    "tests/test_drf_throttle_parity.py",
)
#: The tests that cover each script.
COVERING = {
    "sliding_window": THROTTLE_TESTS,
    "sliding_window_counter": THROTTLE_TESTS,
    "throttle_round": ROUND_TESTS,
    "cache_get": CACHE_TESTS,
    "cache_set": CACHE_TESTS,
    "cache_unlock": CACHE_TESTS,
    "generation_bump": GENERATION_TESTS,
    "generation_read": GENERATION_TESTS,
    "cache_stats_add": ("tests/test_caching.py",),
    "popular_products": (EDGES, "tests/test_client.py", "tests/test_seed_guide.py"),
    "popular_track": (EDGES, "tests/test_client.py", "tests/test_seed_guide.py"),
}

_W = "sliding_window"
_C = "sliding_window_counter"
MUTANTS: tuple[Mutant, ...] = (
    # -- the exact log -------------------------------------------------------------------
    Mutant(_W, "trim one second early", "'-inf', now - max_window)",
           "'-inf', now - max_window + 1000000)"),
    Mutant(_W, "trim one second late", "'-inf', now - max_window)",
           "'-inf', now - max_window - 1000000)"),
    Mutant(_W, "max window is the min", "if w > max_window then",
           "if w < max_window then"),
    Mutant(_W, "shorter windows count the whole log", "if w < max_window then",
           "if false then"),
    Mutant(_W, "shorter window's count starts a second late",
           "'(' .. (now - w)", "'(' .. (now - w + 1000000)"),
    Mutant(_W, "refuse at the limit", "if excess > 0 then", "if excess >= 0 then"),
    Mutant(_W, "admit one over the limit", "if excess > 0 then", "if excess > 1 then"),
    Mutant(_W, "a cost equal to the limit never fits", "if cost > limit then",
           "if cost >= limit then"),
    Mutant(_W, "retry points one entry too far",
           "card - count + excess - 1, card - count + excess - 1",
           "card - count + excess, card - count + excess"),
    Mutant(_W, "retry without the window", "retry = tonumber(hit[2]) + w - now",
           "retry = tonumber(hit[2]) - now"),
    Mutant(_W, "retry at the limit is not the oldest entry's", "retry = reset  --",
           "retry = reset + 1000000  --"),
    Mutant(_W, "at the limit the retry is never the oldest entry's", "elseif excess == 1 then",
           "elseif false then",
           equivalent="the general branch reads the same entry (rank card - count + 0) and "
           "gives the same retry: only one ZRANGE fewer"),
    Mutant(_W, "dry run records", "local recorded = out[1] == 1 and record",
           "local recorded = out[1] == 1"),
    Mutant(_W, "one member too few", "for j = 1, cost do", "for j = 1, cost - 1 do"),
    Mutant(_W, "a single request's member is not the one taken back",
           "ARGV[2] .. ':1')  --", "ARGV[2] .. ':0')  --"),
    Mutant(_W, "a single request is not recorded", "if recorded and cost == 1 then",
           "if false then"),
    Mutant(_W, "no PEXPIRE", "  redis.call('PEXPIRE', key, math.ceil(max_window / 1000))\n", ""),
    Mutant(_W, "PEXPIRE in seconds", "math.ceil(max_window / 1000))",
           "math.ceil(max_window / 1000000))"),
    Mutant(_W, "remaining ignores this request", "if recorded then used = used + cost end",
           "if false then used = used + cost end"),
    Mutant(_W, "reset from the wrong entry", "'ZRANGE', key, card - count, card - count,",
           "'ZRANGE', key, card - count + 1, card - count + 1,"),
    Mutant(_W, "reset without the window", "reset = tonumber(oldest[2]) + w - now",
           "reset = tonumber(oldest[2]) - now"),
    Mutant(_W, "an empty window's first request reports no reset",
           "if out[3 * i] == 0 and used > 0 then", "if false then"),
    Mutant(_W, "remaining may go negative", "math.max(tonumber(ARGV[2 + 2 * i]) - used, 0)",
           "tonumber(ARGV[2 + 2 * i]) - used"),
    # -- the counter ---------------------------------------------------------------------
    Mutant(_C, "previous window ignored", "local estimate = prev * left + cur",
           "local estimate = cur"),
    Mutant(_C, "previous window fully weighted", "local estimate = prev * left + cur",
           "local estimate = prev + cur"),
    Mutant(_C, "weight by time elapsed, not left", "local left = (start + w - now) / w",
           "local left = (now - start) / w"),
    Mutant(_C, "refuse at the limit", "if estimate + cost > limit then",
           "if estimate + cost >= limit then"),
    Mutant(_C, "a cost equal to the limit never fits", "if cost > limit then",
           "if cost >= limit then"),
    Mutant(_C, "wrong retry branch at the limit", "elseif cur + cost <= limit then",
           "elseif cur + cost < limit then"),
    Mutant(_C, "retry ignores the cost", "local needed = (limit - cost - cur) / prev",
           "local needed = (limit - cur) / prev"),
    Mutant(_C, "next-window retry ignores the cost", "w * (1 - (limit - cost) / cur)",
           "w * (1 - limit / cur)"),
    Mutant(_C, "retry may be zero", "retry = math.max(math.ceil(retry), 1)",
           "retry = math.ceil(retry)",
           equivalent="a refused request's retry is > 0 on both branches (the estimate is "
           "over the limit, so the decay still needed is positive); the floor of 1 µs only "
           "guards against rounding"),
    Mutant(_C, "no PEXPIRE", "  redis.call('PEXPIRE', key, math.ceil(2 * max_window / 1000))\n",
           ""),
    Mutant(_C, "PEXPIRE one window only", "math.ceil(2 * max_window / 1000)",
           "math.ceil(max_window / 1000)"),
    Mutant(_C, "cleanup drops the previous window", "< s[3] - 1 then", "< s[3] then"),
    Mutant(_C, "remaining rounds up", "math.max(math.floor(limit - estimate), 0)",
           "math.max(math.ceil(limit - estimate), 0)"),
    Mutant(_C, "remaining ignores this request", "    s[5] = s[5] + cost\n", ""),
    Mutant(_C, "dry run records", "if admitted == 1 and record and cost > 0 then",
           "if admitted == 1 and cost > 0 then"),
    # -- caching -------------------------------------------------------------------------
    Mutant("cache_get", "any generation is current", "if eg and tonumber(eg) == g then",
           "if eg then"),
    Mutant("cache_get", "stale entry kept", "  redis.call('DEL', KEYS[2])\nend",
           "end"),
    Mutant("cache_get", "early refresh never", "tonumber(delta) * factor >= pttl",
           "tonumber(delta) * factor >= pttl * 1000"),
    Mutant("cache_get", "ETag ignored", "if ARGV[4] ~= '' and etag == ARGV[4] then",
           "if false then"),
    Mutant("cache_get", "lock not taken on a miss",
           "if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then\n  return {g, '', 1",
           "if true then\n  return {g, '', 1"),
    Mutant("cache_get", "pass-through marker ignored", "== '!' then", "== '?' then"),
    Mutant("cache_get", "lifetime of a hit not told",
           "if ARGV[5] == '1' and pttl == -1 then", "if false then"),
    Mutant("cache_get", "lifetime of a hit told unasked",
           "if ARGV[5] == '1' and pttl == -1 then", "if pttl == -1 then"),
    Mutant("cache_get", "lifetime of a vary record not told",
           "      return {g, entry, 6, redis.call('PTTL', KEYS[2])}",
           "      return {g, entry, 6, -1}"),
    Mutant("cache_set", "store under a moved generation",
           "if cur and tonumber(cur) == tonumber(ARGV[1]) then", "if true then"),
    Mutant("cache_set", "no TTL", "redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)",
           "redis.call('SET', KEYS[2], ARGV[2])"),
    Mutant("cache_set", "vary record without TTL", "redis.call('SET', KEYS[4], ARGV[5], 'PX', ttl)",
           "redis.call('SET', KEYS[4], ARGV[5])"),
    Mutant("cache_set", "replaced vary record ignored",
           "ok = redis.call('GET', KEYS[4]) == ARGV[5]", "ok = true"),
    Mutant("cache_get", "vary record of an old generation followed",
           "if vg and tonumber(vg) == g then", "if vg then"),
    Mutant("cache_set", "lock kept", "  redis.call('DEL', KEYS[3])\nend\nreturn stored",
           "end\nreturn stored"),
    Mutant("cache_unlock", "releases a lock it does not hold",
           "if redis.call('GET', KEYS[1]) ~= ARGV[1] then", "if false then"),
    Mutant("cache_unlock", "no pass-through marker", "if tonumber(ARGV[2]) > 0 then",
           "if false then"),
    Mutant("throttle_round", "no take-back on a refusal",
           "        take_back(KEYS[j], earlier[1], earlier[2], out[j])\n", ""),
    Mutant("throttle_round", "throttles after a refusal record",
           "if refused then args[flag_at[kind]] = '0' end", ""),
    Mutant("throttle_round", "take-back reports nothing given back",
           "reply[at] = math.min(limit, reply[at] + cost)", "reply[at] = reply[at]"),
    Mutant("throttle_round", "counter taken back in the wrong window",
           "math.floor(now / w)", "math.floor(now / w) - 1"),
    Mutant("generation_bump", "bump to the same value", "or '0') + 1", "or '0') + 0"),
    Mutant("generation_bump", "bump ignores the clock", "if gen < now then gen = now end", ""),
    Mutant("generation_read", "missing generation restarts at 0", "redis.call('SET', key, now)\n"
           "    gen = now", "redis.call('SET', key, 0)\n    gen = 0"),
    Mutant("cache_stats_add", "last pair dropped", "for i = 1, #ARGV - 1, 2 do",
           "for i = 1, #ARGV - 3, 2 do"),
    Mutant("popular_products", "one product too few", "tonumber(ARGV[1]) - 1",
           "tonumber(ARGV[1]) - 2"),
    Mutant("popular_products", "scratch key kept", "redis.call('DEL', KEYS[1])\n", ""),
    Mutant("popular_track", "a view counted twice", "'ZINCRBY', KEYS[1], 1,",
           "'ZINCRBY', KEYS[1], 2,"),
    Mutant("popular_track", "the day never expires", "redis.call('EXPIRE', KEYS[1], ARGV[2])\n",
           ""),
    Mutant("popular_track", "the day expires in an hour", "KEYS[1], ARGV[2])", "KEYS[1], 3600)"),
    Mutant("popular_track", "no count returned", "return tonumber(views)", "return 0"),
)  # fmt: skip


# -- the runner ----------------------------------------------------------------------------

_installed: list = []  # the real get_script first, then every wrapper handed out


def _install(mutant: Mutant) -> None:
    """Make ``get_script`` hand out the mutated script, everywhere it was imported.

    Scripts that embed the mutated one (``--@function``, e.g. ``throttle_round``)
    get the mutation too.
    """
    from redis.commands.core import Script

    from drf_redis_toolkit import scripts

    if not _installed:
        _installed.append(scripts.get_script)
    original = _installed[0]

    def read(name: str) -> bytes:
        text = (LUA / f"{name}.lua").read_text()
        return (mutant.apply(text) if name == mutant.script else text).encode()

    mutated: dict[str, Script] = {}

    def get_script(name: str) -> Script:
        if name not in mutated:
            source = scripts.script_source(name, read)
            unchanged = source == scripts.script_source(name)
            mutated[name] = original(name) if unchanged else Script(None, source)  # type: ignore[arg-type]
        return mutated[name]

    _rebind(get_script)
    _installed.append(get_script)


def _rebind(replacement: object) -> None:
    for module in list(sys.modules.values()):
        if any(getattr(module, "get_script", None) is f for f in _installed):
            module.get_script = replacement  # type: ignore[attr-defined]


def run(scripts: list[str] | None = None, backends: str = "fake") -> list[Mutant]:
    """Run the mutants of ``scripts`` (all if ``None``); return the survivors not equivalent."""
    return [m for m in MUTANTS if (not scripts or m.script in scripts) and not m.equivalent
            and not run_mutant(m, backends)[0]]  # fmt: skip


def run_mutant(mutant: Mutant, backends: str = "fake") -> tuple[bool, float]:
    """Run the covering tests with ``mutant`` in place: ``(killed, seconds)``."""
    import pytest

    args = ["-x", "-q", "--tb=no", "-p", "no:randomly", "-p", "no:cacheprovider"]
    args += [str(ROOT / path) for path in COVERING[mutant.script]]
    if backends != "all":
        args += ["-k", "not cluster" if backends == "real" else "not real and not cluster"]
    started = time.monotonic()
    _install(mutant)
    try:
        code = pytest.main(args)
    finally:
        _rebind(_installed[0])
    # Exit code 1: tests failed, the mutant is killed; 0: it survived; else a harness error.
    if code not in (0, 1):
        raise RuntimeError(f"pytest exited {code} for {mutant}")
    return code == 1, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--script", action="append", help="only this script (repeatable)")
    parser.add_argument(
        "--backends",
        choices=["fake", "real", "all"],
        default="fake",
        help="fakeredis only (default), plus a real server, plus the cluster",
    )
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.script or m.script in args.script]
    for mutant in chosen:  # every mutation still applies to today's script
        mutant.apply((LUA / f"{mutant.script}.lua").read_text())
    if args.list:
        for mutant in chosen:
            print(f"{mutant.script}: {mutant.name}")
        return 0
    os.chdir(ROOT)
    scores: dict[str, list[int]] = {}
    survivors, verdicts = [], []
    for mutant in chosen:
        killed, seconds = run_mutant(mutant, args.backends)
        score = scores.setdefault(mutant.script, [0, 0])
        score[0] += killed
        score[1] += 1
        state = "killed  " if killed else "EQUIVALENT" if mutant.equivalent else "SURVIVED"
        verdicts.append(f"{state} {mutant.script}: {mutant.name} ({seconds:.1f}s)")
        if not killed and not mutant.equivalent:
            survivors.append(mutant)
    print("\n" + "\n".join(verdicts))
    print("\nscore per script (killed / mutants, equivalents included in the total):")
    for script, (killed, total) in scores.items():
        print(f"  {script:24s} {killed}/{total} killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
