"""Where answers are generated, behind the server.

- `LocalBackend`: the built-in engine in this process (the default, `flywheel up`).
- `RemoteBackend`: an engine elsewhere that speaks vLLM's OpenAI-compatible protocol
  (`flywheel engine`, or vLLM with `--enable-lora`), reached over HTTP.
- `Gateway`: routes each answer to the healthy backend with the fewest outstanding
  requests among those that hold its adapter, and watches their health.

Every backend offers the engine's `generate(prompt_ids, params, adapter)` stream, so the
chat service cannot tell them apart, and `load_adapter` / `unload_adapter`, which the
adapter manager calls on each of them.
"""


class BackendUnavailable(Exception):
    """The backend cannot be reached, or broke off mid-answer: retry elsewhere."""


class AdapterRefused(Exception):
    """The backend refused to load an adapter (its files, shapes or smoke test)."""
