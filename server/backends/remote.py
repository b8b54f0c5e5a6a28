"""An engine elsewhere that speaks vLLM's OpenAI-compatible protocol (`flywheel engine`,
or `vllm serve --enable-lora` with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True):

- answers: streaming `POST /v1/completions` with the prompt as token ids (the gateway
  renders the chat itself, so every backend sees exactly the same prompt) and `model`
  set to the adapter's name, or to the base model's id for the base model;
- `GET /health`, and `GET /v1/models` (the base model, and LoRAs with their `parent`);
- `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and
  `POST /v1/unload_lora_adapter {"lora_name"}`: the path must be where the engine sees
  the shared adapter store.
"""

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from server.backends import AdapterRefused, BackendUnavailable
from server.engine import Event, Failed, Finished, Token
from server.sampling import SamplingParams

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
LOAD_TIMEOUT_S = 120.0  # loading an adapter on a busy GPU machine can take a while


class RemoteBackend:
    def __init__(self, url: str, *, smoke_prompt: list[int], max_batch: int = 32,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.url = url.rstrip("/")
        self.name = self.url
        self.up = False  # routable: healthy, and reconciled since it last joined
        self.adapters: set[str] = set()  # what the gateway loaded on it
        self.outstanding = 0  # answers the gateway has in flight here
        self.max_batch = max_batch
        self.base_model: str | None = None  # its base model's id, from /v1/models
        self.smoke_prompt = smoke_prompt
        self.http = httpx.AsyncClient(base_url=self.url, transport=transport, trust_env=False,
                                      timeout=httpx.Timeout(LOAD_TIMEOUT_S, connect=5.0))

    @property
    def queued(self) -> int:
        """Answers beyond what it runs at once (as the built-in engine counts its queue)."""
        return max(0, self.outstanding - self.max_batch)

    async def close(self) -> None:
        await self.http.aclose()

    # -- health and adapters ------------------------------------------------------------------

    async def check(self) -> bool:
        """Healthy: /health answers 200 and /v1/models names its base model."""
        try:
            health = await self.http.get("/health", timeout=CHECK_TIMEOUT_S)
            if health.status_code != 200:
                return False
            self.base_model = next(
                (card["id"] for card in await self._models() if not card.get("parent")), None)
        except (httpx.HTTPError, BackendUnavailable, ValueError, KeyError, TypeError):
            return False
        return self.base_model is not None

    async def held_adapters(self) -> set[str]:
        return {card["id"] for card in await self._models() if card.get("parent")}

    async def load_adapter(self, name: str, path: Path) -> None:
        """Load it, then answer one token with it: refused (AdapterRefused) when either
        fails, and then it is not left loaded."""
        response = await self._post("/v1/load_lora_adapter",
                                    {"lora_name": name, "lora_path": str(path)})
        if response.status_code != 200:
            raise AdapterRefused(f"{self.name} refused it: {_error_message(response)}")
        try:
            async for event in self.generate(self.smoke_prompt,
                                             SamplingParams(max_tokens=1, temperature=0.0), name):
                if isinstance(event, Failed):
                    raise AdapterRefused(f"its smoke generation on {self.name} failed: "
                                         f"{event.error}")
        except AdapterRefused:
            await self.unload_adapter(name)
            raise
        self.adapters.add(name)

    async def unload_adapter(self, name: str) -> None:
        response = await self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code not in (200, 404):  # 404: it no longer holds it anyway
            raise AdapterRefused(f"{self.name} did not unload {name}: "
                                 f"{_error_message(response)}")
        self.adapters.discard(name)

    async def _models(self) -> list[dict]:
        try:
            response = await self.http.get("/v1/models", timeout=CHECK_TIMEOUT_S)
        except httpx.HTTPError as e:
            raise BackendUnavailable(f"{self.name}: {e!r}") from e
        if response.status_code != 200:
            raise BackendUnavailable(f"{self.name}/v1/models: {response.status_code}")
        return response.json()["data"]

    async def _post(self, path: str, body: dict) -> httpx.Response:
        try:
            response = await self.http.post(path, json=body)
        except httpx.HTTPError as e:
            raise BackendUnavailable(f"{self.name}: {e!r}") from e
        if response.status_code >= 500:
            raise BackendUnavailable(f"{self.name}{path}: {_error_message(response)}")
        return response

    # -- answers ------------------------------------------------------------------------------

    async def generate(self, prompt_ids: list[int], params: SamplingParams,
                       adapter: str | None = None) -> AsyncIterator[Event]:
        """The engine's events for one answer, read from the SSE stream. A backend that
        cannot be reached or breaks off raises BackendUnavailable; one that refuses the
        request (a 4xx) ends it with Failed. Leaving early closes the stream, and the
        engine drops the request."""
        body = {"model": adapter or self.base_model, "prompt": prompt_ids,
                "max_tokens": params.max_tokens, "temperature": params.temperature,
                "top_p": params.top_p, "stop": list(params.stop), "seed": params.seed,
                "min_tokens": params.min_tokens, "ignore_eos": params.ignore_eos,
                "stream": True, "stream_options": {"include_usage": True}}
        text, reason, usage = "", None, None
        try:
            async with self.http.stream("POST", "/v1/completions", json=body,
                                        timeout=httpx.Timeout(None, connect=5.0)) as response:
                if response.status_code != 200:
                    await response.aread()
                    if response.status_code >= 500:
                        raise BackendUnavailable(f"{self.name}: {_error_message(response)}")
                    yield Failed(f"{self.name} refused the request: "
                                 f"{_error_message(response)}")
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        yield Failed(f"{self.name}: {chunk['error'].get('message')}")
                        return
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices", []):
                        if choice.get("text"):
                            text += choice["text"]
                            yield Token(choice["text"])
                        reason = choice.get("finish_reason") or reason
        except httpx.HTTPError as e:
            raise BackendUnavailable(f"{self.name} broke off: {e!r}") from e
        if reason is None or usage is None:
            raise BackendUnavailable(f"{self.name} ended the stream before the answer did")
        yield Finished(reason, text, usage["prompt_tokens"], usage["completion_tokens"])


def _error_message(response: httpx.Response) -> str:
    """The message of vLLM's error shapes (`{"error": {"message"}}`, or the older flat
    `{"message"}`), else the status and body."""
    try:
        body = response.json()
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except ValueError:
        pass
    return f"HTTP {response.status_code} {response.text[:200]}"
