"""Rate limits per user and per client address, and the server's capacity, both refused
in the one error shape.

The counters are the `limits` package's moving windows, kept in memory (one server) or
in Redis (`FLYWHEEL_RATE_LIMIT_STORAGE=redis://…`), where every replica charges the same
budget: N replicas then allow the limit once, not N times.
"""

import math
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from server.errors import APIError

MEMORY = "memory://"
PRUNE_EVERY_S = 60.0


class RateLimiter:
    """At most `per_minute` answers per user, and `per_address` per client address, in
    any 60-second window. A window is forgotten once its last answer is a minute old
    (Redis expires its keys; in memory, `_forget_stale` drops them once a minute)."""

    def __init__(self, per_minute: int, *, per_address: int | None = None,
                 storage: str = MEMORY, namespace: str = "flywheel"):
        self.per_minute = per_minute
        self.per_address = per_minute if per_address is None else per_address
        self.storage = storage_from_string(storage)
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._user = RateLimitItemPerMinute(self.per_minute, namespace=f"{namespace}-user")
        self._address = RateLimitItemPerMinute(self.per_address,
                                               namespace=f"{namespace}-address")
        self._pruned_at = time.time()

    def check(self, user_id: int | None, *, address: str | None = None,
              cost: int = 1) -> None:
        """Charge `cost` answers to the user and to the address (either may be None);
        429 + Retry-After when either has no budget left, and then neither is charged.
        (Across replicas two requests may pass the test at the same moment; each charge
        is still atomic, so the overshoot is at most one request per replica.)"""
        self._forget_stale()
        budgets = []
        if user_id is not None:
            budgets.append((self._user, str(user_id), ""))
        if address is not None:
            budgets.append((self._address, address, " from one address"))
        for item, key, whose in budgets:
            if not self._limiter.test(item, key, cost=cost):
                self._refuse(item, key, whose)
        for item, key, whose in budgets:
            if not self._limiter.hit(item, key, cost=cost):
                self._refuse(item, key, whose)

    def _forget_stale(self) -> None:
        """Drop the memory storage's windows whose answers are all over a minute old: it
        empties them on a timer but keeps their keys, one per user and address ever seen."""
        now = time.time()
        if not isinstance(self.storage, MemoryStorage) or now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        for key in list(self.storage.events):
            with self.storage.locks[key]:
                if all(entry.expiry <= now for entry in self.storage.events.get(key, ())):
                    self.storage.events.pop(key, None)
                    self.storage.locks.pop(key, None)

    def _refuse(self, item: RateLimitItemPerMinute, key: str, whose: str) -> None:
        reset_at = self._limiter.get_window_stats(item, key).reset_time
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise APIError(429, f"rate limit: {item.amount} answers a minute{whose}; "
                       f"retry in {retry_after} s", code="rate_limit_exceeded",
                       headers={"Retry-After": str(retry_after)})


def check_capacity(engine, max_queue: int, *, cost: int = 1) -> None:
    """Queue beyond the running batch (the engine's, or the backends' together), up to
    `max_queue`; past that, 503 + Retry-After."""
    if engine.queued + cost > max_queue:
        raise APIError(503, "the server is at capacity; retry shortly", code="overloaded",
                       headers={"Retry-After": "2"})
