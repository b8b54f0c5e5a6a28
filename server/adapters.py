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
"""

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from sqlalchemy import Engine

from feedback.db import session_scope
from feedback.models import AdapterStatus
from feedback.queries import adapters as registry
from flywheel.adapter_store import AdapterStore
from flywheel.generation import adapter_name
from server.engine import GenerationEngine
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
    def __init__(self, *, engine: GenerationEngine, store: AdapterStore, db: Engine,
                 base_name: str):
        self.engine, self.store, self.db, self.base_name = engine, store, db, base_name
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

    async def _load(self, version: str, sha256: str) -> None:
        try:
            await self.engine.call(lambda: self._load_on_engine(version, sha256))
        except Exception as e:
            self.failed[version] = (sha256, str(e))
            log.error("adapter %s refused: %s", version, e)
            return
        self.loaded[version] = sha256
        self.failed.pop(version, None)
        log.info("adapter %s loaded", version, extra={"adapter": version})

    def _load_on_engine(self, version: str, sha256: str) -> None:
        """Verify (against the registry's `sha256`), load and smoke-test; on any failure
        leave the model as it was."""
        name = self.engine_name(version)
        self.engine.model = self.store.load(self.engine.model, version, adapter_name=name,
                                            sha256=sha256)
        try:
            probe = torch.tensor([[self.engine.tokenizer.bos_token_id or 1] * 4],
                                 device=self.engine.device)
            logits = self.engine.model(input_ids=probe, adapter_names=[name]).logits
            if not torch.isfinite(logits).all():
                raise ValueError("its smoke generation gave non-finite logits")
        except Exception:
            self._drop_on_engine(name)
            raise

    def _drop_on_engine(self, name: str) -> None:
        """Remove one adapter from the model. Removing the last one unwraps the base model:
        a PeftModel left with no adapter can neither generate nor take a new adapter."""
        model = self.engine.model
        if set(model.peft_config) == {name}:
            self.engine.model = model.unload()
        else:
            model.delete_adapter(name)

    async def _unload(self, version: str) -> None:
        name = self.engine_name(version)
        await self.engine.call(lambda: self._drop_on_engine(name))
        del self.loaded[version]
        self._unrouted_at.pop(version, None)
        log.info("adapter %s unloaded", version, extra={"adapter": version})
