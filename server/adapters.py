"""Which LoRA adapters this server holds in memory, and how API model names map to them.

The registry (the `adapter` table) says which version is live and which are candidates
under evaluation; `sync` loads what is missing from the adapter store, on the engine
thread between two decode steps, so running requests never see a half-loaded model. A
version that fails to load is logged and skipped: the live model stays as it was.
"""

import logging

from sqlalchemy import Engine

from feedback.db import session_scope
from feedback.models import AdapterStatus
from feedback.queries import adapters as registry
from flywheel.adapter_store import AdapterStore
from server.engine import GenerationEngine
from server.errors import APIError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "flywheel"  # the live adapter if there is one, else the base model


class AdapterManager:
    def __init__(self, *, engine: GenerationEngine, store: AdapterStore, db: Engine,
                 base_name: str):
        self.engine, self.store, self.db, self.base_name = engine, store, db, base_name
        self.loaded: set[str] = set()
        self.live: str | None = None
        self.candidates: list[str] = []

    async def sync(self) -> None:
        with session_scope(self.db) as session:
            live = registry.live_adapter(session)
            candidates = registry.list_adapters(session, status=AdapterStatus.candidate)
        wanted = ([live.version] if live else []) + [a.version for a in candidates]
        for version in wanted:
            if version not in self.loaded:
                try:
                    await self.engine.call(lambda v=version: self._load(v))
                except Exception as e:
                    log.error("adapter %s not loaded: %s", version, e)
        self.live = live.version if live and live.version in self.loaded else None
        self.candidates = [v for v in wanted[1 if live else 0:] if v in self.loaded]

    def _load(self, version: str) -> None:
        """On the engine thread: add the adapter beside those already loaded."""
        self.engine.model = self.store.load(self.engine.model, version,
                                            adapter_name=self.engine_name(version))
        self.loaded.add(version)
        log.info("adapter %s loaded", version)

    @staticmethod
    def engine_name(version: str | None) -> str | None:
        return None if version is None else version.replace(".", "_")

    @property
    def default(self) -> str | None:
        return self.live

    def model_names(self) -> list[str]:
        return [DEFAULT_MODEL, self.base_name, *sorted(self.loaded)]

    def resolve(self, model: str | None) -> str | None:
        """The adapter version an API `model` names (None: the base model)."""
        if model in (None, "", DEFAULT_MODEL):
            return self.default
        if model == self.base_name:
            return None
        if model in self.loaded:
            return model
        raise APIError(404, f"the model {model!r} does not exist; GET /v1/models lists them",
                       code="model_not_found")
