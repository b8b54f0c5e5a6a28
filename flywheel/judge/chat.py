"""A chat model as judge: any OpenAI-compatible chat endpoint (a hosted API, a vLLM
server, a Flywheel server), asked greedily (temperature 0) with the rubric."""

import time

import httpx

from flywheel.errors import FlywheelError
from flywheel.judge.rubric import Rubric
from flywheel.judge.verdicts import Reply, parse_verdict

DEFAULT_MAX_TOKENS = 16  # a verdict is a word; a few more let a model say "Answer: A."
RETRIES = 5  # on 429 and 503 (rate limits, a full queue), after Retry-After or a backoff
RETRIED = (429, 502, 503)


class ChatJudge:
    """Asks `model` at `url` (the API's base URL, e.g. http://127.0.0.1:8000/v1), with
    `api_key` as a Bearer token when given."""

    def __init__(self, url: str, model: str, *, rubric: Rubric, api_key: str | None = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, timeout_s: float = 120.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/") + "/", headers=headers,
                                   timeout=timeout_s, transport=transport, trust_env=False)
        self.model, self.rubric, self.max_tokens = model, rubric, max_tokens
        self.name = f"{model} at {url}"

    def ask_pair(self, prompt: str, first: str, second: str) -> Reply:
        return self._ask(self.rubric.pair_messages(prompt, first, second), single=False)

    def ask_single(self, prompt: str, answer: str) -> Reply:
        return self._ask(self.rubric.single_messages(prompt, answer), single=True)

    def close(self) -> None:
        self.client.close()

    def _ask(self, messages: list[dict[str, str]], *, single: bool) -> Reply:
        body = {"model": self.model, "messages": messages, "temperature": 0,
                "max_tokens": self.max_tokens}
        for attempt in range(RETRIES + 1):
            try:
                response = self.client.post("chat/completions", json=body)
            except httpx.HTTPError as e:
                raise FlywheelError(f"the judge at {self.client.base_url} is unreachable: "
                                    f"{e}") from None
            if response.status_code not in RETRIED or attempt == RETRIES:
                break
            time.sleep(_retry_after(response, attempt))
        if not response.is_success:
            raise FlywheelError(f"the judge at {self.client.base_url} answered "
                                f"{response.status_code}: {response.text[:300]}")
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise FlywheelError(f"the judge at {self.client.base_url} did not answer in the "
                                f"OpenAI chat format: {response.text[:300]}") from None
        usage = data.get("usage") or {}
        return Reply(parse_verdict(text, single=single), text,
                     int(usage.get("prompt_tokens") or 0),
                     int(usage.get("completion_tokens") or 0))


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """The seconds the endpoint asks to wait (at most a minute), else 1, 2, 4… seconds."""
    try:
        return min(60.0, max(0.0, float(response.headers["retry-after"])))
    except (KeyError, ValueError):
        return float(2 ** attempt)
