"""The adapters this server holds, reconciled with the registry's desired state.

The registry (the `adapter` table) says which version is live, which candidates are under
evaluation, and which get a canary share of traffic. `sync` brings this server in line —
at start, by polling (so replicas converge), and at once after an operator acts here:

- a new adapter is verified (its files against the checksum the registry holds, its
  weights finite, its tensor shapes), loaded beside the others on the engine thread between
  two decode steps, and smoke-tested (one forward pass with finite logits) before any
  request is routed to it; one that fails is unloaded and reported, and the adapters
  already serving are untouched;
- an operator's action that would make an adapter servable (promotion, rollback, canary)
  loads it here first (`admit`), and is refused while it does not load; a live adapter
  this server cannot load still happens (files damaged later, another server's registry
  change), and `degraded` then says so;
- routing switches in one assignment, and each answer keeps the adapter it started with
  (`acquire` … `release` around its generation);
- an adapter no longer wanted stops taking new requests at once, and is unloaded once its
  last answer has finished and a short grace period (for requests already routed to it
  but not yet generating) has passed.

It does this on every generation backend: the built-in engine in this process, or each
engine behind the gateway (`server/backends/`). A version is verified once, here, against
the registry's checksum; each backend then loads it from the shared adapter store and
smoke-tests it, and it counts as loaded once every backend that is up holds it. A backend
that joins (or comes back) is reconciled before it takes traffic (`join`): it unloads
what is no longer served and loads what is.
"""

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Engine

from feedback.db import session_scope
from feedback.models import AdapterStatus
from feedback.queries import adapters as registry
from flywheel.adapter_store import AdapterStore
from flywheel.generation import adapter_name
from server.backends import BackendUnavailable
from server.errors import APIError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "flywheel"  # the live adapter (or a canary) if there is one, else the base
DRAIN_GRACE_S = 5.0
# The statuses from which an operator's action can make an adapter servable: approved
# (promotion, canary), retired (promotion, rollback), candidate (canary).
BECOMES_SERVABLE = (AdapterStatus.approved, AdapterStatus.retired, AdapterStatus.candidate)


@dataclass
class _Desired:
    """What the registry wants served: every adapter's sha256, and their roles."""

    sha256: dict[str, str] = field(default_factory=dict)
    live: str | None = None
    candidates: list[str] = field(default_factory=list)
    canary: dict[str, float] = field(default_factory=dict)


class AdapterManager:
    def __init__(self, *, backends: list, store: AdapterStore, db: Engine, base_name: str,
                 gateway=None):
        """`backends`: LocalBackend or RemoteBackends; `gateway`, over the remote ones,
        hears when one of them cannot be reached."""
        self.backends, self.store, self.db, self.base_name = backends, store, db, base_name
        self.gateway = gateway
        self.loaded: dict[str, str] = {}  # version -> sha256 of what is in memory
        self.failed: dict[str, tuple[str, str]] = {}  # version -> (sha256, error)
        self.live: str | None = None
        self.wanted_live: str | None = None  # the registry's live adapter, at the last sync
        self.candidates: list[str] = []  # under evaluation: side-by-side turns
        self.canary: dict[str, float] = {}  # version -> share of default traffic
        self.in_flight: Counter[str | None] = Counter()
        self._unrouted_at: dict[str, float] = {}  # version -> when it stopped being routed
        self._lock = asyncio.Lock()

    # -- routing ----------------------------------------------------------------------------

    def routable(self) -> set[str]:
        return {v for v in [self.live, *self.candidates, *self.canary] if v is not None}

    def resolve(self, model: str | None) -> str | None:
        """The adapter version an API `model` names (None: the base model)."""
        if model in (None, "", DEFAULT_MODEL):
            for version, share in self.canary.items():
                if random.random() < share:
                    return version
            return self.live
        if model == self.base_name:
            return None
        if model in self.routable():
            return model
        raise APIError(404, f"the model {model!r} does not exist; GET /v1/models lists them",
                       code="model_not_found")

    def acquire(self, version: str | None) -> None:
        """Pin `version` for one answer: it stays loaded until `release`."""
        if version is not None and version not in self.loaded:
            raise APIError(503, f"adapter {version} was just retired; retry",
                           code="adapter_retired", headers={"Retry-After": "1"})
        self.in_flight[version] += 1

    def release(self, version: str | None) -> None:
        self.in_flight[version] -= 1

    def model_names(self) -> list[str]:
        return [DEFAULT_MODEL, self.base_name, *sorted(self.routable())]

    @staticmethod
    def engine_name(version: str | None) -> str | None:
        return None if version is None else adapter_name(version)

    def degraded(self) -> str | None:
        """Why this server does not serve the adapter the registry says is live, or None."""
        if self.live == self.wanted_live:
            return None
        served = self.live or f"the base model {self.base_name}"
        refused = f" ({self.wanted_live} was refused)" if self.wanted_live in self.failed else ""
        return (f"the registry says {self.wanted_live or 'no adapter'} is live; this server "
                f"serves {served}{refused}")

    # -- reconciling --------------------------------------------------------------------------

    async def run(self, every_s: float) -> None:
        """Poll the registry for ever (a task of the app's lifespan)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sync()
            except Exception:  # the next poll tries again; serving goes on meanwhile
                log.exception("adapter sync failed")

    async def sync(self) -> None:
        async with self._lock:
            desired = await asyncio.to_thread(self._desired)
            for version, sha256 in desired.sha256.items():
                if version not in self.loaded and self.failed.get(version, ("",))[0] != sha256:
                    await self._load(version, sha256)
            # Refusals of adapters no longer wanted are forgotten (one wanted again is retried).
            self.failed = {v: f for v, f in self.failed.items() if v in desired.sha256}
            # The switch: plain assignments, no await between them. An adapter refused as
            # the new live one leaves the live one serving (it stays loaded and routed).
            if desired.live is None or desired.live in self.loaded:
                self.live = desired.live
            self.wanted_live = desired.live
            self.candidates = [v for v in desired.candidates if v in self.loaded]
            self.canary = {v: s for v, s in desired.canary.items() if v in self.loaded}
            routable = self.routable()
            now = time.monotonic()
            for version in list(self.loaded):
                if version in routable:
                    self._unrouted_at.pop(version, None)
                elif (now - self._unrouted_at.setdefault(version, now) >= DRAIN_GRACE_S
                      and self.in_flight[version] == 0):
                    await self._unload(version)

    async def admit(self, version: str | None) -> None:
        """Load `version` here before the registry makes it servable: promoted, rolled back
        to (None: the adapter a rollback would bring back), or given a canary share. It is
        verified against the registry's checksum, loaded and smoke-tested like any other,
        and stays loaded (unrouted: it drains if the registry's change does not follow).
        One that does not load raises 409 `adapter_unloadable`, so the change is never
        made. A version the registry lacks, or cannot make servable, is left for the
        registry's own error."""
        target = await asyncio.to_thread(self._servable, version)
        if target is None:
            return
        version, sha256 = target
        if not self._up():
            raise APIError(503, "no generation backend is up to load the adapter on; retry "
                           "shortly", code="backend_unavailable", headers={"Retry-After": "2"})
        async with self._lock:
            if version not in self.loaded:
                await self._load(version, sha256)
        if version not in self.loaded:
            raise APIError(409, f"adapter {version} cannot be served, so the registry was left "
                           f"as it was: {self.failed[version][1]}", code="adapter_unloadable")

    def _servable(self, version: str | None) -> tuple[str, str] | None:
        with session_scope(self.db) as session:
            row = (registry.rollback_target(session) if version is None
                   else registry.get_adapter(session, version=version))
            if row is None or row.status not in BECOMES_SERVABLE:
                return None
            return row.version, row.sha256

    def _desired(self) -> _Desired:
        with session_scope(self.db) as session:
            live = registry.live_adapter(session)
            rows = [*registry.list_adapters(session, status=AdapterStatus.candidate),
                    *registry.list_adapters(session, status=AdapterStatus.approved)]
        desired = _Desired()
        if live is not None:
            desired.sha256[live.version] = live.sha256
            desired.live = live.version
        for row in rows:
            if row.status == AdapterStatus.candidate:
                desired.candidates.append(row.version)
            if row.traffic_share > 0:
                desired.canary[row.version] = row.traffic_share
            if row.status == AdapterStatus.candidate or row.traffic_share > 0:
                desired.sha256[row.version] = row.sha256
        return desired

    async def join(self, backend) -> None:
        """Reconcile a backend that is joining (or coming back) before it takes traffic:
        it unloads what this server no longer serves and loads what it does. An adapter
        it refuses keeps it out (the gateway retries at its next check)."""
        async with self._lock:
            wanted = {self.engine_name(v): v for v in self.loaded}
            held = await backend.held_adapters()
            for name in held - wanted.keys():
                await backend.unload_adapter(name)
            for name in wanted.keys() - held:
                await backend.load_adapter(name, self.store.path(wanted[name]).resolve())
            backend.adapters = set(wanted)
            log.info("backend %s reconciled: %s", backend.name, sorted(wanted) or "no adapters",
                     extra={"backend": backend.name})

    def _up(self) -> list:
        return [b for b in self.backends if b.up]

    def _down(self, backend, error: BackendUnavailable) -> None:
        if self.gateway is not None:
            self.gateway.mark_down(backend, str(error))

    async def _load(self, version: str, sha256: str) -> None:
        """Verify `version` against the registry's `sha256`, then load and smoke-test it on
        every backend that is up; refused (and unloaded from those that took it) if any of
        them refuses it. One that cannot be reached is marked down, not blamed: it loads
        the adapter when it rejoins."""
        name, done = self.engine_name(version), []
        try:
            path = (await asyncio.to_thread(self.store.verify, version, sha256=sha256)).path
            for backend in self._up():
                try:
                    await backend.load_adapter(name, path.resolve())
                    done.append(backend)
                except BackendUnavailable as e:
                    self._down(backend, e)
        except Exception as e:
            for backend in done:
                await self._unload_from(backend, name)
            self.failed[version] = (sha256, str(e))
            log.error("adapter %s refused: %s", version, e)
            return
        self.loaded[version] = sha256
        self.failed.pop(version, None)
        log.info("adapter %s loaded", version, extra={"adapter": version})

    async def _unload(self, version: str) -> None:
        name = self.engine_name(version)
        for backend in self.backends:
            if name in backend.adapters:
                await self._unload_from(backend, name)
        del self.loaded[version]
        self._unrouted_at.pop(version, None)
        log.info("adapter %s unloaded", version, extra={"adapter": version})

    async def _unload_from(self, backend, name: str) -> None:
        try:
            await backend.unload_adapter(name)
        except BackendUnavailable as e:  # it is reconciled when it rejoins
            self._down(backend, e)
        except Exception:
            log.exception("backend %s did not unload %s", backend.name, name)
        backend.adapters.discard(name)
