"""Rate limits per user and per client address, and the server's capacity, both refused
in the one error shape."""

import math
import time
from collections import OrderedDict, deque

from server.engine import GenerationEngine
from server.errors import APIError

WINDOW_S = 60.0
MAX_KEYS = 10_000  # users and addresses tracked at once (the limiter's memory)


class RateLimiter:
    """At most `per_minute` answers per user, and `per_address` per client address, in
    any 60-second window. Memory stays bounded: a window is forgotten once its last
    answer is a minute old, and beyond `max_keys` windows the least recently charged
    goes first."""

    def __init__(self, per_minute: int, *, per_address: int | None = None,
                 max_keys: int = MAX_KEYS):
        self.per_minute = per_minute
        self.per_address = per_minute if per_address is None else per_address
        self.max_keys = max_keys
        # (kind, user id or address) -> times of its answers; least recently charged first
        self._windows: OrderedDict[tuple[str, int | str], deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def check(self, user_id: int | None, *, address: str | None = None,
              cost: int = 1) -> None:
        """Charge `cost` answers to the user and to the address (either may be None);
        429 + Retry-After when either has no budget left, and then neither is charged."""
        now = time.monotonic()
        self._forget_stale(now)
        budgets = []
        if user_id is not None:
            budgets.append((("user", user_id), self.per_minute, ""))
        if address is not None:
            budgets.append((("address", address), self.per_address, " from one address"))
        for key, limit, whose in budgets:
            hits = self._windows.get(key, deque())
            while hits and now - hits[0] >= WINDOW_S:
                hits.popleft()
            if len(hits) + cost > limit:
                retry_after = math.ceil(WINDOW_S - (now - hits[0])) if hits else 1
                raise APIError(429, f"rate limit: {limit} answers a minute{whose}; "
                               f"retry in {retry_after} s", code="rate_limit_exceeded",
                               headers={"Retry-After": str(retry_after)})
        for key, _, _ in budgets:
            hits = self._windows.pop(key, deque())
            hits.extend([now] * cost)
            self._windows[key] = hits
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)

    def _forget_stale(self, now: float) -> None:
        while self._windows:
            oldest = next(iter(self._windows.values()))
            if oldest and now - oldest[-1] < WINDOW_S:
                return
            self._windows.popitem(last=False)


def check_capacity(engine: GenerationEngine, max_queue: int, *, cost: int = 1) -> None:
    """Queue beyond the running batch, up to `max_queue`; past that, 503 + Retry-After."""
    if engine.queued + cost > max_queue:
        raise APIError(503, "the server is at capacity; retry shortly", code="overloaded",
                       headers={"Retry-After": "2"})
