"""The gateway over generation backends: it routes each answer and watches their health.

Each answer goes to the backend with the fewest outstanding requests among those that are
up and hold its adapter. A backend that cannot be reached before the answer's first token
is skipped for the next one; one that breaks off mid-answer ends that answer with a
retryable 503 `backend_unavailable` (what was streamed cannot be taken back). Either way
it is marked down. Every `check_every_s` the gateway checks each backend; one that comes
back (or appears for the first time: gateways and engines start in any order) is first
reconciled with the adapters this server serves (`on_join`), then takes traffic.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from server.backends import BackendUnavailable
from server.backends.remote import RemoteBackend
from server.engine import Event, Token
from server.errors import APIError
from server.sampling import SamplingParams

log = logging.getLogger(__name__)

RETRY_AFTER = {"Retry-After": "1"}


class Gateway:
    def __init__(self, backends: list[RemoteBackend], *,
                 on_join: Callable[[RemoteBackend], Awaitable[None]] | None = None):
        self.backends = backends
        self.on_join = on_join  # the adapter manager's reconcile, set once it exists

    @property
    def queued(self) -> int:
        return sum(b.queued for b in self.backends)

    @property
    def active(self) -> int:
        return sum(b.outstanding for b in self.backends)

    def up(self) -> list[RemoteBackend]:
        return [b for b in self.backends if b.up]

    async def generate(self, prompt_ids: list[int], params: SamplingParams,
                       adapter: str | None = None) -> AsyncIterator[Event]:
        tried: set[str] = set()
        while True:
            backend = self._pick(adapter, tried)
            tried.add(backend.name)
            backend.outstanding += 1
            started = False
            try:
                async for event in backend.generate(prompt_ids, params, adapter):
                    started = started or isinstance(event, Token)
                    yield event
                return
            except BackendUnavailable as e:
                self.mark_down(backend, str(e))
                if started:
                    raise APIError(503, f"the generation backend {backend.name} went away "
                                   "mid-answer; retry", code="backend_unavailable",
                                   headers=RETRY_AFTER) from None
            finally:
                backend.outstanding -= 1

    def _pick(self, adapter: str | None, tried: set[str]) -> RemoteBackend:
        up = [b for b in self.up() if b.name not in tried]
        holding = [b for b in up if adapter is None or adapter in b.adapters]
        if not holding:
            why = (f"none of the {len(self.backends)} generation backends is up" if not up
                   else f"no generation backend that is up holds the adapter {adapter}")
            raise APIError(503, f"{why}; retry shortly", code="backend_unavailable",
                           headers=RETRY_AFTER)
        return min(holding, key=lambda b: b.outstanding)

    def mark_down(self, backend: RemoteBackend, why: str) -> None:
        if backend.up:
            log.warning("generation backend %s is down: %s", backend.name, why,
                        extra={"backend": backend.name})
        backend.up = False

    # -- health ---------------------------------------------------------------------------------

    async def run(self, every_s: float) -> None:
        """Check every backend for ever (a task of the app's lifespan)."""
        while True:
            await self.check_all()
            await asyncio.sleep(every_s)

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(b) for b in self.backends))

    async def _check(self, backend: RemoteBackend) -> None:
        healthy = await backend.check()
        if not healthy:
            self.mark_down(backend, "its health check failed")
            return
        if backend.up:
            return
        try:
            if self.on_join is not None:
                await self.on_join(backend)
        except Exception as e:  # it stays out of rotation; the next check tries again
            log.warning("generation backend %s is healthy but could not be reconciled: %s",
                        backend.name, e, extra={"backend": backend.name})
            return
        backend.up = True
        log.info("generation backend %s is up (base model %s, adapters %s)", backend.name,
                 backend.base_model, sorted(backend.adapters) or "none",
                 extra={"backend": backend.name})

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends))
