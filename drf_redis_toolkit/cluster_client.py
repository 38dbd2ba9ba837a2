"""The toolkit's Redis Cluster client: one retry to follow a fail-over, none after a timeout.

After a master dies, the first command to its slots is refused (``ConnectionError``);
redis-py then re-reads the slot map, and one retry reaches the promoted replica. A
node that hangs is another matter: its command ends in a ``TimeoutError`` after
``SOCKET_TIMEOUT``, and a retry would wait as long again (twice more on redis-py 5,
whose cluster client retries three times and whose node connections retry too).
The toolkit promises that a request waits for Redis at most one ``SOCKET_TIMEOUT``
before the circuit breaker takes over, so a timeout is never retried here.

redis-py decides what the cluster client retries with ``type(error) in
ERRORS_ALLOW_RETRY``, a class attribute; this subclass only narrows it. Pipelines
(``get_many``/``set_many`` on a cluster) keep redis-py's own rule.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

#: redis-py 6 moved the cluster client's retries to its ``retry`` object; redis-py 5
#: counts them in ``cluster_error_retry_attempts`` and hands ``retry`` to every node.
_RETRY_OBJECT_DRIVES_CLUSTER = int(redis.__version__.split(".")[0]) >= 6


class ToolkitRedisCluster(RedisCluster):
    """``RedisCluster`` that never retries a command after a timeout."""

    ERRORS_ALLOW_RETRY = tuple(  # type: ignore[assignment]  # a shorter tuple on purpose
        error for error in RedisCluster.ERRORS_ALLOW_RETRY if error is not redis.TimeoutError
    )


def cluster_from_url(url: str, **kwargs: Any) -> RedisCluster:
    """A ``ToolkitRedisCluster`` retrying once after a refused node, on redis-py 5 to 7."""
    if _RETRY_OBJECT_DRIVES_CLUSTER:
        kwargs["retry"] = Retry(NoBackoff(), 1)
    else:
        kwargs["retry"] = Retry(NoBackoff(), 0)  # the node connections: never
        kwargs["cluster_error_retry_attempts"] = 1  # the cluster client: once
    return ToolkitRedisCluster.from_url(url, **kwargs)
