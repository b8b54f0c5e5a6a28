"""The built-in engine in this process, as a backend: loading an adapter verifies it,
loads it between two decode steps and smoke-tests it, all on the engine thread."""

from collections.abc import AsyncIterator
from pathlib import Path

import torch
from peft import PeftModel

from flywheel.adapter_store import AdapterStore
from server.engine import Event, GenerationEngine
from server.sampling import SamplingParams


class LocalBackend:
    name = "local"
    up = True  # it lives and dies with this process

    def __init__(self, engine: GenerationEngine):
        self.engine = engine
        self.adapters: set[str] = set()  # names of the adapters loaded on the model

    @property
    def queued(self) -> int:
        return self.engine.queued

    @property
    def outstanding(self) -> int:
        return self.engine.active + self.engine.queued

    def generate(self, prompt_ids: list[int], params: SamplingParams,
                 adapter: str | None = None) -> AsyncIterator[Event]:
        return self.engine.generate(prompt_ids, params, adapter)

    async def check(self) -> bool:
        return True

    async def held_adapters(self) -> set[str]:
        model = self.engine.model
        return set(model.peft_config) if isinstance(model, PeftModel) else set()

    async def load_adapter(self, name: str, path: Path) -> None:
        """Load the adapter stored at `path` (verified against its manifest, fitted to
        the model, finite) as `name`, and smoke-test it; on failure the model is left as
        it was and the error says why."""
        await self.engine.call(lambda: self._load_on_engine(name, Path(path)))
        self.adapters.add(name)

    async def unload_adapter(self, name: str) -> None:
        await self.engine.call(lambda: self._drop_on_engine(name))
        self.adapters.discard(name)

    def _load_on_engine(self, name: str, path: Path) -> None:
        store = AdapterStore(path.parent)
        self.engine.model = store.load(self.engine.model, path.name, adapter_name=name)
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
        if not isinstance(model, PeftModel) or name not in model.peft_config:
            return
        if set(model.peft_config) == {name}:
            self.engine.model = model.unload()
        else:
            model.delete_adapter(name)
