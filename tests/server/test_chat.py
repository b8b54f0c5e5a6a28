"""The chat service's prompts: a conversation fitted into the model's window, in linear time,
with exactly the turns the template would keep (checked against a brute-force fit on the
demo template and two templates of real model families)."""

import random

import pytest

from server.chat import ChatService
from server.errors import APIError
from tests.fixtures.tiny_models import tiny_tokenizer
from tests.server.support import chat_ids

CHATML = (  # Qwen's
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n'"
    " + message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = (  # a bos once, headers around each message, the content trimmed
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role']"
    " + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
WORDS = ["sea", "arr", "ship,", "the!", "ok?", "well-known", "don't", "42", "naïve", "café",
         "日本", "e-mail"]


def _chat(template: str | None = None, window: int = 512) -> ChatService:
    tokenizer = tiny_tokenizer()
    if template is not None:
        tokenizer.chat_template = template
    return ChatService(db=None, engine=None, tokenizer=tokenizer, adapters=None,
                       metrics=None, max_context=window, settings=None, limiter=None,
                       records=None)


def _fit_by_rerendering(tokenizer, messages: list[dict], max_tokens: int,
                        window: int) -> list[int] | None:
    """The reference: render the whole thread, drop the oldest exchange, render again,
    until it fits (quadratic); None where even the last turn does not fit."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    budget = window - min(max_tokens, window // 2)
    while len(ids := chat_ids(tokenizer, system + turns)) > budget:
        if len(turns) <= 1:
            return None
        turns = turns[1:]
        while len(turns) > 1 and turns[0]["role"] != "user":
            turns = turns[1:]
    return ids


def _random_conversation(rng: random.Random) -> list[dict]:
    def text(most: int) -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(0, most)))

    messages = [{"role": "system", "content": text(10)}] if rng.random() < 0.5 else []
    for i in range(rng.randint(0, 15)):
        alternating = "user" if i % 2 == 0 else "assistant"
        role = rng.choice(["user", "assistant"]) if rng.random() < 0.2 else alternating
        messages.append({"role": role, "content": text(30)})
    return [*messages, {"role": "user", "content": text(40)}]


@pytest.mark.parametrize("template", [None, CHATML, LLAMA3], ids=["demo", "chatml", "llama3"])
def test_the_prompt_is_the_template_of_as_many_turns_as_fit(template) -> None:
    rng = random.Random(0)
    for window in (64, 128, 512):
        chat = _chat(template, window)
        for _ in range(50):
            messages = _random_conversation(rng)
            max_tokens = rng.choice([1, 8, 64, 10_000])
            expected = _fit_by_rerendering(chat.tokenizer, messages, max_tokens, window)
            if expected is None:
                with pytest.raises(APIError) as refused:
                    chat.prompt_ids(messages, max_tokens)
                assert refused.value.code == "context_length_exceeded"
            else:
                assert chat.prompt_ids(messages, max_tokens) == expected, messages


class _Counting:
    """A tokenizer that counts the templates it renders and the characters it encodes."""

    def __init__(self, tokenizer):
        self.tokenizer, self.renders, self.encoded = tokenizer, 0, 0

    def apply_chat_template(self, messages, **kwargs):
        self.renders += 1
        self.encoded += sum(len(m["content"]) for m in messages)
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def encode(self, text, **kwargs):
        self.encoded += len(text)
        return self.tokenizer.encode(text, **kwargs)

    def __call__(self, text, **kwargs):  # the rendered template's text, counted above
        return self.tokenizer(text, **kwargs)


@pytest.mark.parametrize("template", [None, CHATML, LLAMA3], ids=["demo", "chatml", "llama3"])
@pytest.mark.parametrize("words", [1000, 20])
def test_a_long_conversation_costs_what_fits_not_its_square(template, words) -> None:
    """The issue's request: 199 alternating long user and short assistant turns. Refitting
    by rendering again after each dropped turn took 14.5 s; one render of what fits will do,
    and turns older than the window reaches are never tokenized."""
    chat = _chat(template)
    messages = []
    for i in range(99):
        messages += [{"role": "user", "content": f"question {i} " + "sea " * words},
                     {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": "last " * 50})
    chat.prompt_ids(messages[-3:], 64)  # the template's overhead is measured once, first
    tokenizer = chat.tokenizer
    chat.tokenizer = counting = _Counting(tokenizer)

    ids = chat.prompt_ids(messages, 64)

    assert counting.renders == 1
    kept = next(i for i in range(len(messages) - 1, 0, -2)  # the user turns, newest first
                if chat_ids(tokenizer, messages[i:]) == ids)
    assert len(ids) <= 512 - 64 < len(chat_ids(tokenizer, messages[kept - 2:]))
    assert counting.encoded < 2 * len("".join(m["content"] for m in messages[kept - 2:]))


def test_max_tokens_beyond_the_window_is_refused() -> None:
    chat = _chat(window=512)
    chat.check_max_tokens(512)
    for too_many in (513, 10**30):
        with pytest.raises(APIError) as refused:
            chat.check_max_tokens(too_many)
        assert (refused.value.status, refused.value.code) == (422, "invalid_request")
        assert "512" in refused.value.message
