"""Per-user rate limits and the server's capacity, both refused in the one error shape."""

import math
import time
from collections import deque

from server.engine import GenerationEngine
from server.errors import APIError

WINDOW_S = 60.0


class RateLimiter:
    """At most `per_minute` answers per user in any 60-second window."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._hits: dict[int, deque[float]] = {}

    def check(self, user_id: int, *, cost: int = 1) -> None:
        now = time.monotonic()
        hits = self._hits.setdefault(user_id, deque())
        while hits and now - hits[0] >= WINDOW_S:
            hits.popleft()
        if len(hits) + cost > self.per_minute:
            retry_after = math.ceil(WINDOW_S - (now - hits[0])) if hits else 1
            raise APIError(429, f"rate limit: {self.per_minute} answers a minute; "
                           f"retry in {retry_after} s", code="rate_limit_exceeded",
                           headers={"Retry-After": str(retry_after)})
        hits.extend([now] * cost)


def check_capacity(engine: GenerationEngine, max_queue: int, *, cost: int = 1) -> None:
    """Queue beyond the running batch, up to `max_queue`; past that, 503 + Retry-After."""
    if engine.queued + cost > max_queue:
        raise APIError(503, "the server is at capacity; retry shortly", code="overloaded",
                       headers={"Retry-After": "2"})
