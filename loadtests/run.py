"""Run the Locust load test against the sample API, on loopback, bounded in time: ``make load``.

For each run it starts, in a fresh temporary directory:

1. a real ``redis-server`` (or a local 3-master Redis Cluster with ``--cluster``);
2. a fresh SQLite database (a throwaway PostgreSQL cluster with ``--db postgres``,
   or ``DATABASE_URL``), migrated and seeded;
3. the sample API under gunicorn with several worker processes on 127.0.0.1;
4. headless Locust (``loadtests/locustfile.py``) for ``--duration`` seconds;

then writes Locust's CSV and HTML reports and a ``summary.json`` to
``loadtests/results/``, and stops everything it started, by PID, even on
Ctrl-C, SIGTERM or failure. It exits non-zero when the run saw a stale read,
over-admission, an early refusal, any other wrong answer or an unexpected error,
when Locust itself exited non-zero (a failed request or an exception in a task),
or when a kind of check never ran (``checks.verdict``).

``--mode saturate`` finds the most requests/s each of the two sustains with
p95 <= 100 ms (``loadtests/saturate.py``).

``--mode baseline`` runs the same API with the toolkit's response cache off and
DRF's own throttles on django-redis (``SHOP_BASELINE=1``); ``--mode compare``
runs both and reports the ratios; ``--sweep 10,20,40`` repeats it per user count
(for ``loadtests/plot.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_api"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
RESULTS = ROOT / "loadtests" / "results"
sys.path.insert(0, str(ROOT))

from loadtests import cpu, saturate  # noqa: E402
from loadtests.checks import (  # noqa: E402
    early_refusals,
    namespace_family,
    over_admission,
    parse_rate,
    verdict,
)

HOST = "127.0.0.1"
#: Rates the server applies during a load run (per simulated client / user). Browsers and
#: shoppers stay well under them; the abuser's account is far above ``user``.
DEFAULT_RATES = {
    "anon": os.environ.get("SHOP_RATE_ANON", "50/s,2000/min"),
    "user": os.environ.get("SHOP_RATE_USER", "20/s,600/min"),
    "cart_write": os.environ.get("SHOP_RATE_CART_WRITE", "120/min"),
}
#: Violations that mean stale data was served.
STALE = ("stale-read", "stale-not-modified", "cart-stale-price")


class Interrupted(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


def _on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def log(message: str) -> None:
    print(f"load: {message}", flush=True)


# -- processes we start, and stop by PID --------------------------------------------------


class Started:
    """Everything this run started, stopped in reverse order however the run ends."""

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], None]]] = []

    def add(self, name: str, stop: Callable[[], None]) -> None:
        self._stops.append((name, stop))

    def stop_all(self) -> None:
        while self._stops:
            name, stop = self._stops.pop()
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 -- keep stopping the others
                log(f"could not stop {name}: {exc}")

    def stop_one(self, name: str) -> None:
        for index, (other, stop) in enumerate(self._stops):
            if other == name:
                del self._stops[index]
                stop()
                return


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL its process group (it leads its own session)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)


def spawn(
    args: list[str], env: dict[str, str], logfile: Path, cwd: Path = ROOT
) -> subprocess.Popen:
    handle = logfile.open("ab")
    try:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
        )
    finally:
        handle.close()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- one run ---------------------------------------------------------------------------


def rates_of(args: argparse.Namespace) -> dict[str, str]:
    """The rates the server applies in this run: ``DEFAULT_RATES`` unless the mode sets its own."""
    return getattr(args, "rates", None) or DEFAULT_RATES


def server_env(
    args: argparse.Namespace, mode: str, redis_url: str, workdir: Path
) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "REDIS_URL": redis_url,
        "REDIS_CLUSTER": "1" if args.cluster else "0",
        "DJANGO_DEBUG": "0",
        "SHOP_NUM_PROXIES": "1",
        "SHOP_BASELINE": "1" if mode == "baseline" else "0",
        "SHOP_RATE_ANON": rates_of(args)["anon"],
        "SHOP_RATE_USER": rates_of(args)["user"],
        "SHOP_RATE_CART_WRITE": rates_of(args)["cart_write"],
        **getattr(args, "extra_env", {}),  # a configuration of saturate's (LOCAL_CACHE)
    }
    if not os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'db.sqlite3'}"
    return env


def manage(*argv: str, env: dict[str, str], logfile: Path, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, str(SAMPLE / "manage.py"), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    with logfile.open("a") as handle:
        handle.write(f"$ manage.py {' '.join(argv)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def free_port() -> int:
    from tests.servers import free_port as pick

    return pick()


def wait_for_http(url: str, process: subprocess.Popen, logfile: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{tail(logfile)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the sample API did not answer within {timeout:.0f}s:\n{tail(logfile)}")


def start_database(args: argparse.Namespace, started: Started) -> dict[str, str]:
    """With ``--db postgres`` (``make load DB=postgres``): a throwaway PostgreSQL cluster.

    Returns the environment to serve the API on it (``DATABASE_URL``); the
    cluster is stopped by PID with everything else this run started.
    """
    if args.db != "postgres":
        return {}
    from tests import servers

    postgres = servers.start_postgres()
    started.add("postgres", postgres.stop)
    log(f"postgres pid {postgres.pid} on 127.0.0.1:{postgres.port}")
    return {"DATABASE_URL": postgres.create_database("shop")}


def run_once(args: argparse.Namespace, mode: str, users: int, outdir: Path) -> dict[str, Any]:
    """Start everything, run Locust, stop everything; return the summary."""
    from tests import servers

    if servers.redis_server_binary() is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("*"):
        if old.is_file():
            old.unlink()
    workdir = Path(tempfile.mkdtemp(prefix="drt-load-"))
    logfile = outdir / "servers.log"
    started = Started()
    # MODE=saturate: the server side on CPU 0, Locust on CPU 1 (where there are two).
    server_cpus, client_cpus = ("0", "1") if getattr(args, "pin", False) else (None, None)
    redis_pids: list[int] = []
    try:
        if args.cluster:
            cluster = servers.start_cluster(masters=3)
            started.add("redis cluster", cluster.stop)
            redis_url = cluster.url
            redis_pids = [n.pid for n in cluster.nodes]
            log(f"{mode}: redis cluster (3 masters, pids {[n.pid for n in cluster.nodes]})")
        else:
            server = servers.start_redis()
            started.add("redis-server", server.stop)
            redis_url = server.url
            redis_pids = [server.pid]
            log(f"{mode}: redis-server pid {server.pid} on {redis_url}")
        for pid in redis_pids if server_cpus else ():
            cpu.pin(pid, server_cpus)
        env = server_env(args, mode, redis_url, workdir)
        env.update(metrics_env(workdir))  # /metrics summed over the workers
        env.update(start_database(args, started))
        manage("migrate", "--noinput", "-v", "0", env=env, logfile=logfile)
        demo_users = users + 5
        manage(
            "seed_demo", "--products", str(args.products), "--users", str(demo_users),
            env=env, logfile=logfile,
        )  # fmt: skip
        port = free_port()
        gunicorn = spawn(
            cpu.pinned([
                sys.executable, "-m", "gunicorn", "config.wsgi:application",
                "--chdir", str(SAMPLE),
                "--bind", f"{HOST}:{port}",
                "--workers", str(args.workers),
                "--worker-class", "gthread",
                "--threads", str(args.threads),
                "--graceful-timeout", "10",
                "--timeout", "60",
                "--log-level", "warning",
            ], server_cpus),
            env,
            logfile,
        )  # fmt: skip
        started.add("gunicorn", lambda: stop_process(gunicorn))
        base_url = f"http://{HOST}:{port}"
        wait_for_http(f"{base_url}/api/categories/", gunicorn, logfile)
        log(
            f"{mode}: gunicorn pid {gunicorn.pid}, {args.workers} workers x {args.threads} "
            f"threads on {base_url}; locust {users} users for {args.duration}s"
        )
        client_json = outdir / "client.json"
        rates = rates_of(args)
        if mode == "baseline":  # DRF applies the first limit of each rate only
            rates = {scope: rate.split(",")[0] for scope, rate in rates.items()}
        locust_env = {
            **env,
            "DRT_LOAD_MODE": mode,
            "DRT_LOAD_PRODUCTS": str(args.products),
            "DRT_LOAD_USERS": str(demo_users),
            "DRT_LOAD_RATES": json.dumps(rates),
            "DRT_LOAD_ABUSERS": str(args.abusers),
            "DRT_LOAD_OUT": str(client_json),
            "DRT_LOAD_THINK": "0" if getattr(args, "no_think", False) else "1",
        }
        server_side = descendants_of(gunicorn.pid, redis_pids)
        server_cpu_before = cpu.cpu_seconds(server_side)
        locust = spawn(
            cpu.pinned([
                sys.executable, "-m", "locust",
                "-f", str(LOCUSTFILE),
                "--headless",
                "--users", str(users),
                "--spawn-rate", str(args.spawn_rate),
                "--run-time", f"{args.duration}s",
                "--stop-timeout", "5",
                "--host", base_url,
                "--csv", str(outdir / "locust"),
                "--html", str(outdir / "report.html"),
                "--only-summary",
                "--reset-stats",  # throughput and latency once every user runs
                "--loglevel", "WARNING",
            ], client_cpus),
            locust_env,
            outdir / "locust.log",
        )  # fmt: skip
        started.add("locust", lambda: stop_process(locust, timeout=30))
        locust_started = time.monotonic()
        locust_exit, client_cpu = wait_measuring(locust, deadline=args.duration + 120)
        if locust_exit is None:
            log("locust overran its time; stopping it")
        wall = time.monotonic() - locust_started
        server_cpu = cpu.cpu_seconds(descendants_of(gunicorn.pid, redis_pids)) - server_cpu_before
        started.stop_one("locust")
        server_metrics = read_metrics(base_url)  # before the workers stop
        # Stop the workers gracefully first: they flush their cache counters on exit.
        started.stop_one("gunicorn")
        try:
            stats = json.loads(manage("cache_stats", "--json", env=env, logfile=logfile))
        except (RuntimeError, ValueError) as exc:
            log(f"cache_stats failed: {exc}")
            stats = {}
        (outdir / "cache_stats.json").write_text(json.dumps(stats, indent=1))
        if not client_json.exists():
            raise RuntimeError(f"locust wrote no results:\n{tail(outdir / 'locust.log')}")
        summary = summarize(args, mode, users, outdir, stats, locust_exit)
        summary["metrics"] = server_metrics
        summary["cpu"] = {
            "pinned": {"server": server_cpus, "locust": client_cpus},
            "wall_s": round(wall, 1),
            "server_s": round(server_cpu, 1),  # redis-server + gunicorn master and workers
            "locust_s": round(client_cpu, 1),
        }
        (outdir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary
    finally:
        # A second Ctrl-C must not leave half of it running.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            started.stop_all()
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)


def descendants_of(gunicorn_pid: int, redis_pids: list[int]) -> list[int]:
    """The server side of a run: gunicorn, its workers, and the Redis process(es)."""
    return [*cpu.descendants(gunicorn_pid), *redis_pids]


def wait_measuring(process: subprocess.Popen, deadline: float) -> tuple[int | None, float]:
    """Wait (at most ``deadline`` seconds) for ``process``; its exit code and CPU seconds.

    The CPU is sampled every half second while it runs (``/proc`` forgets a process
    once it is reaped), so the figure can miss up to half a second of its work.
    """
    used = 0.0
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        used = max(used, cpu.cpu_seconds(cpu.descendants(process.pid)))
        try:
            return process.wait(timeout=0.5), used
        except subprocess.TimeoutExpired:
            continue
    return None, used


# -- the Prometheus metrics (docs/observability.md) -------------------------------------


def metrics_env(workdir: Path) -> dict[str, str]:
    """prometheus-client's multiprocess mode for the workers, and the ``child_exit`` hook."""
    directory = workdir / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    config = SAMPLE / "config" / "gunicorn.conf.py"
    return {"PROMETHEUS_MULTIPROC_DIR": str(directory), "GUNICORN_CMD_ARGS": f"--config {config}"}


def read_metrics(base_url: str) -> dict[str, Any]:
    """Hit rate and throttle refusals as the server counted them, from ``/metrics``."""
    try:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
            text = response.read().decode()
    except (ImportError, OSError) as exc:
        log(f"/metrics not read: {exc}")
        return {}
    cache: dict[str, dict[str, float]] = {}
    refused: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "drf_redis_toolkit_cache_requests_total":
                outcomes = cache.setdefault(sample.labels["namespace"], {})
                outcomes[sample.labels["outcome"]] = sample.value
            elif sample.name == "drf_redis_toolkit_throttle_decisions_total":
                if sample.labels["outcome"] == "refused":
                    refused[sample.labels["scope"]] = sample.value
    total = sum(sum(o.values()) for o in cache.values())
    hits = sum(o.get("hit", 0) + o.get("not_modified", 0) for o in cache.values())
    return {
        "cache_requests": int(total),
        "cache_hit_rate": round(100 * hits / total, 1) if total else None,
        "cache_outcomes": cache,
        "throttle_refused": {scope: int(n) for scope, n in refused.items()},
    }


# -- the summary -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
    redis_version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        redis_version = next((p[2:] for p in out.split() if p.startswith("v=")), out.strip())
    return {
        "cpus": os.cpu_count(),
        "memory_gib": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        **{
            name: version(name)
            for name in ("django", "djangorestframework", "redis", "locust", "gunicorn")
        },
    }


def machine_line() -> str:
    """``machine()`` as one line of text, for a report."""
    return ", ".join(f"{name} {value}" for name, value in machine().items() if value is not None)


def summarize(
    args: argparse.Namespace,
    mode: str,
    users: int,
    outdir: Path,
    cache_stats: dict[str, Any],
    locust_exit: int | None,
) -> dict[str, Any]:
    client = json.loads((outdir / "client.json").read_text())
    stats = client["stats"]
    elapsed = client.get("measured_s") or client.get("elapsed_s") or args.duration
    endpoints = {}
    for key, entry in sorted(stats["entries"].items()):
        if entry["type"] == "CHECK":
            continue
        endpoints[key] = {
            "requests": entry["requests"],
            "failures": entry["failures"],
            "requests_per_s": round(entry["requests"] / elapsed, 2),
            "p50_ms": entry["p50_ms"],
            "p95_ms": entry["p95_ms"],
            "p99_ms": entry["p99_ms"],
        }
    total = stats["http"]["requests"]
    # Counted by the locustfile over the whole run, ramp-up included (Locust's figures
    # start after it: --reset-stats).
    errors = sum(client.get("errors", {}).values())
    error_examples = [f"{what} x{n}" for what, n in client.get("errors", {}).items()][:10]

    # Hit rate per namespace family, from the toolkit's own counters (every worker's).
    families: dict[str, dict[str, int]] = {}
    for namespace, counts in (cache_stats.get("namespaces") or {}).items():
        family = families.setdefault(namespace_family(namespace), {"hits": 0, "misses": 0})
        family["hits"] += counts.get("hits", 0)
        family["misses"] += counts.get("misses", 0)
    for family in families.values():
        seen = family["hits"] + family["misses"]
        family["hit_rate"] = round(100.0 * family["hits"] / seen, 1) if seen else 0.0
    client_hits = {
        name: {
            "hits": c.get("HIT", 0),
            "misses": c.get("MISS", 0),
            "hit_rate": round(
                100.0 * c.get("HIT", 0) / max(1, c.get("HIT", 0) + c.get("MISS", 0)), 1
            ),
        }
        for name, c in client.get("x_cache", {}).items()
    }
    scopes = {
        scope: {
            "requests": c.get("requests", 0),
            "throttled": c.get("throttled", 0),
            "share_429": round(100.0 * c.get("throttled", 0) / max(1, c.get("requests", 0)), 2),
        }
        for scope, c in client.get("scopes", {}).items()
    }

    # Over-admission, recomputed here from the abuser's own log.
    abuse = client.get("abuse", {})
    admitted = [(s, e) for s, e, status in abuse.get("log", []) if status == 200]
    over = [
        over_admission(admitted, limit, window).as_dict()
        for limit, window in parse_rate(abuse.get("rate", "1/s"))
    ]
    over_total = max((o["excess"] for o in over), default=0)
    early = early_refusals(abuse.get("log", []), parse_rate(abuse.get("rate", "1/s")))

    violations = dict(client.get("violations", {}))
    # Reported below, from the recomputation:
    violations.pop("over-admission", None)
    violations.pop("early-refusal", None)
    stale = sum(violations.get(name, 0) for name in STALE)
    checked = client.get("checked", {})
    browse = stats.get("browse") or {"requests": 0, "p50_ms": 0, "p95_ms": 0, "shared_names": []}
    reasons = verdict(
        mode=mode,
        locust_exit=locust_exit,
        requests=total,
        errors=errors,
        violations=violations,
        over_admission=over_total,
        early_refusals=len(early),
        checked=checked,
        shared_names=browse["shared_names"],
    )
    return {
        "mode": mode,
        "users": users,
        "spawn_rate": args.spawn_rate,
        "duration_s": args.duration,
        "measured_s": elapsed,
        "cluster": bool(args.cluster),
        "gunicorn": {"workers": args.workers, "threads": args.threads},
        "products": args.products,
        "rates": client.get("rates"),
        "machine": machine(),
        "requests": total,
        "requests_per_s": round(total / elapsed, 1),
        "p50_ms": stats["http"]["p50_ms"],
        "p95_ms": stats["http"]["p95_ms"],
        "p99_ms": stats["http"]["p99_ms"],
        # The browsers' requests alone (MODE=saturate's target; locustfile.browse_stats).
        "browse": {
            "requests": browse["requests"],
            "requests_per_s": round(browse["requests"] / elapsed, 1),
            "p50_ms": browse["p50_ms"],
            "p95_ms": browse["p95_ms"],
            "shared_names": browse["shared_names"],
        },
        "endpoints": endpoints,
        "cache_hit_rate": {"server": families, "client": client_hits},
        "throttle_429_share": scopes,
        "abuse": {
            "rate": abuse.get("rate"),
            "requests": abuse.get("requests", 0),
            "admitted": abuse.get("admitted", 0),
            "throttled": abuse.get("throttled", 0),
            "over_admission": over,
            # Judged on the wall clock (Redis's TIME); how far it moved against monotonic.
            "wall_vs_monotonic_ms": abuse.get("wall_vs_monotonic_ms"),
        },
        "checked": checked,
        "violations": violations,
        "violation_examples": client.get("examples", {}),
        "stale_reads": stale,
        "over_admission": over_total,
        "early_refusals": len(early),
        "early_refusal_examples": early[:10],
        "errors": errors,
        "error_examples": error_examples,
        "locust_exit": locust_exit,
        "failed_because": reasons,
        "ok": not reasons,
    }


def describe(summary: dict[str, Any]) -> str:
    lines = [
        f"[{summary['mode']}] {summary['users']} users, {summary['measured_s']:.0f}s measured: "
        f"{summary['requests']} requests, {summary['requests_per_s']} req/s, "
        f"p50 {summary['p50_ms']:.0f} ms, p95 {summary['p95_ms']:.0f} ms, "
        f"p99 {summary['p99_ms']:.0f} ms",
    ]
    for name, e in sorted(summary["endpoints"].items()):
        lines.append(
            f"  {name:52s} {e['requests']:7d} req {e['requests_per_s']:7.1f}/s "
            f"p50 {e['p50_ms']:5.0f} p95 {e['p95_ms']:5.0f} p99 {e['p99_ms']:5.0f} ms"
            + (f"  FAILED {e['failures']}" if e["failures"] else "")
        )
    for name, c in sorted(summary["cache_hit_rate"]["server"].items()):
        lines.append(f"  cache {name:24s} hit rate {c['hit_rate']:5.1f}% ({c['hits']} hits)")
    if summary.get("metrics"):
        m = summary["metrics"]
        lines.append(
            f"  /metrics: hit rate {m['cache_hit_rate']}% of {m['cache_requests']} cacheable "
            f"requests; throttle refusals {m['throttle_refused']}"
        )
    for scope, s in sorted(summary["throttle_429_share"].items()):
        lines.append(
            f"  throttle {scope:12s} {s['throttled']:6d} of {s['requests']:7d} answered 429 "
            f"({s['share_429']}%)"
        )
    abuse = summary["abuse"]
    over = ", ".join(
        f"{o['limit']}/{o['window_s']}s: worst window {o['worst_window']}"
        for o in abuse["over_admission"]
    )
    lines.append(
        f"  abuser at {abuse['rate']}: {abuse['admitted']} admitted, {abuse['throttled']} "
        f"refused; {over} (on the wall clock, which moved "
        f"{abuse.get('wall_vs_monotonic_ms')} ms against the monotonic one)"
    )
    lines.append(f"  checked: {summary['checked']}")
    lines.append(
        f"  stale reads {summary['stale_reads']}, over-admission {summary['over_admission']}, "
        f"early refusals {summary['early_refusals']}, errors {summary['errors']}, "
        f"violations {summary['violations'] or 0}, locust exit {summary['locust_exit']}"
    )
    for reason in summary["failed_because"]:
        lines.append(f"  failed because: {reason}")
    for example in summary["error_examples"]:
        lines.append(f"  error: {example}")
    for name, examples in summary["violation_examples"].items():
        for example in examples[:3]:
            lines.append(f"  {name}: {example}")
    lines.append("  OK" if summary["ok"] else "  FAILED")
    return "\n".join(lines)


def compare(toolkit: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    return {
        "requests_per_s": ratio(toolkit["requests_per_s"], baseline["requests_per_s"]),
        "p50_ms": ratio(baseline["p50_ms"], toolkit["p50_ms"]),
        "p95_ms": ratio(baseline["p95_ms"], toolkit["p95_ms"]),
        "note": "requests_per_s: toolkit / baseline; latencies: baseline / toolkit "
        "(above 1: the toolkit is better)",
    }


# -- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def env(name: str, default: str | None = None) -> str | None:
        return os.environ.get(name) or default  # make passes unset variables as ""

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=int(env("USERS", "20")))
    parser.add_argument("--spawn-rate", type=float, default=float(env("SPAWN_RATE", "5")))
    parser.add_argument(
        "--duration", type=int, default=None, help="seconds (default 60; a step of saturate: 20)"
    )
    parser.add_argument(
        "--mode",
        choices=["toolkit", "baseline", "compare", "saturate"],
        default=env("MODE") or "toolkit",
        help="toolkit (default), baseline (no response cache, DRF throttles), both, or "
        "saturate (both, users doubling until p95 > 100 ms; loadtests/saturate.py)",
    )
    parser.add_argument("--first-users", type=int, default=int(env("FIRST_USERS", "8")))
    parser.add_argument("--max-users", type=int, default=int(env("MAX_USERS", "128")))
    parser.add_argument("--cluster", action="store_true", default=env("CLUSTER") == "1")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default=env("DB", "sqlite"))
    parser.add_argument("--workers", type=int, default=int(env("WORKERS", "4")))
    parser.add_argument("--threads", type=int, default=int(env("THREADS", "4")))
    parser.add_argument("--products", type=int, default=int(env("PRODUCTS", "500")))
    parser.add_argument("--abusers", type=int, default=2, help="greenlets sharing the account")
    parser.add_argument("--sweep", default=env("SWEEP"), help="user counts, e.g. 10,20,40")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--markdown",
        type=Path,
        default=env("MARKDOWN"),
        help="saturate: also write the result between this file's saturate markers",
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = int(env("DURATION") or (20 if args.mode == "saturate" else 60))
    if args.cluster and args.mode != "toolkit":
        parser.error("the baseline (django-redis) needs a standalone Redis: use CLUSTER=1 alone")
    if args.duration <= 0 or args.duration > 3600:
        parser.error("--duration must be 1..3600 seconds")
    return args


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C even when started from a shell that ignores SIGINT in background jobs.
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_saturate(args: argparse.Namespace) -> int:
    report, code = saturate.run(args, run_once, args.out)
    described = saturate.describe(report)
    print(described, flush=True)
    log(f"report in {args.out / 'saturate.json'}")
    if args.markdown:
        from benchmarks.common import write_between_markers

        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        write_between_markers(
            args.markdown,
            "saturate",
            [f"machine: {machine_line()}; load average at the end: {load}", "", described],
        )
        log(f"written to {args.markdown}")
    return code


def run_modes(args: argparse.Namespace) -> int:
    modes = ["toolkit", "baseline"] if args.mode == "compare" else [args.mode]
    user_counts = [int(u) for u in args.sweep.split(",")] if args.sweep else [args.users]
    results: list[dict[str, Any]] = []
    for users in user_counts:
        for mode in modes:
            tag = f"{mode}-u{users}" if args.sweep else mode
            outdir = args.out / tag
            summary = run_once(args, mode, users, outdir)
            print(describe(summary), flush=True)
            results.append(summary)
    report: dict[str, Any]
    if args.sweep:
        report = {"sweep": results}
    elif len(results) == 2:
        report = {"toolkit": results[0], "baseline": results[1]}
        report["ratio"] = compare(results[0], results[1])
        log(f"toolkit / baseline: {report['ratio']}")
    else:
        report = results[0]
    args.out.mkdir(parents=True, exist_ok=True)
    name = "sweep.json" if args.sweep else "summary.json"
    (args.out / name).write_text(json.dumps(report, indent=1))
    log(f"reports in {args.out} ({name}, */locust_stats.csv, */report.html)")
    return 0 if all(r["ok"] for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with signals_as_exceptions():
        try:
            return run_saturate(args) if args.mode == "saturate" else run_modes(args)
        except (KeyboardInterrupt, Interrupted) as exc:
            log(f"interrupted ({str(exc) or 'Ctrl-C'}); everything started was stopped")
            return 130
        except RuntimeError as exc:
            log(f"failed: {exc}")
            return 2


if __name__ == "__main__":
    sys.exit(main())
