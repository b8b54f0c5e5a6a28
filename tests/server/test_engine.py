"""The generation engine, driven directly with asyncio: batched answers equal Hugging Face's
own greedy `generate`, whenever a request joins the running batch."""

import asyncio
import threading
from collections.abc import Iterator

import pytest
import torch

from flywheel.model_loading import LoadedModel
from server.engine import Failed, Finished, GenerationEngine, Token
from server.sampling import SamplingParams
from tests.server.support import (
    block_engine,
    chat_ids,
    greedy_reference,
    greedy_references,
    wait_until,
)

PROMPTS = [
    "hello",
    "tell me a story about a dog",
    "what is the capital of france?",
    "1 2 3 4 5 6 7",
    "x",
    "the quick brown fox jumps over the lazy dog again and again",
]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def engine(demo: LoadedModel) -> Iterator[GenerationEngine]:
    engine = GenerationEngine(demo.model, demo.tokenizer, max_batch=8,
                              max_context=demo.max_context)
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def references(demo: LoadedModel) -> dict[str, str]:
    """Each prompt's greedy answer of 12 tokens, by Hugging Face's `generate`."""
    return dict(zip(PROMPTS, greedy_references(demo, PROMPTS, 12), strict=True))


def _ids(demo: LoadedModel, prompt: str) -> list[int]:
    return chat_ids(demo.tokenizer, [{"role": "user", "content": prompt}])


async def _collect(engine: GenerationEngine, ids: list[int], params: SamplingParams,
                   on_token=None) -> tuple[list[str], Finished | Failed]:
    tokens: list[str] = []
    async for event in engine.generate(ids, params):
        if isinstance(event, Token):
            tokens.append(event.text)
            if on_token is not None:
                on_token(len(tokens))
        else:
            return tokens, event
    raise AssertionError("the stream ended without Finished or Failed")


def test_greedy_answers_equal_hf_generate_for_requests_joining_a_running_batch(
        demo, engine, references) -> None:
    lengths = [12, 5, 9, 3, 12, 7]  # rows leave the batch at different steps
    batch_sizes: list[int] = []

    async def scenario():
        joined = [asyncio.Event() for _ in PROMPTS]
        joined[0].set()

        async def one(i: int):
            await joined[i].wait()
            batch_sizes.append(engine.active)

            def on_token(n: int) -> None:
                if n == 2 and i + 1 < len(PROMPTS):
                    joined[i + 1].set()  # the next request joins mid-answer

            params = SamplingParams(max_tokens=lengths[i], temperature=0.0)
            result = await _collect(engine, _ids(demo, PROMPTS[i]), params, on_token)
            if i + 1 < len(PROMPTS):
                joined[i + 1].set()
            return result

        return await asyncio.gather(*[one(i) for i in range(len(PROMPTS))])

    results = asyncio.run(scenario())

    assert max(batch_sizes) >= 2, "requests should have joined a running batch"
    for prompt, length, (tokens, finished) in zip(PROMPTS, lengths, results, strict=True):
        reference = greedy_reference(demo, prompt, length) if length != 12 else references[prompt]
        assert isinstance(finished, Finished)
        assert finished.text == "".join(tokens) == reference
        assert (finished.reason, finished.completion_tokens) == ("length", length)
        assert finished.prompt_tokens == len(_ids(demo, prompt))
    assert len(set(references.values())) == len(PROMPTS), "prompts should answer differently"
    wait_until(lambda: engine.active == 0, what="the batch to empty")


def test_sixteen_simultaneous_requests_each_get_their_own_answer(demo, engine,
                                                                  references) -> None:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(16)]

    async def scenario():
        return await asyncio.gather(*[_collect(engine, _ids(demo, p), GREEDY) for p in prompts])

    for prompt, (tokens, finished) in zip(prompts, asyncio.run(scenario()), strict=True):
        assert finished.text == "".join(tokens) == references[prompt]


def test_seeded_sampling_reproduces_alone_and_in_a_batch(demo, engine) -> None:
    ids = _ids(demo, PROMPTS[1])
    # In a batch, a row's logits differ from its logits alone in the last bits (~1e-6:
    # the kernels sum in another order), which moves a draw only when it lands that close
    # to a boundary between two tokens. At temperature 1 the untaught model spreads its
    # probability over the whole vocabulary, so on some CPUs one of 12 draws did (AVX-512
    # here: the third token); at 0.5 the answers still differ by seed, and the draws fall
    # into wider intervals.
    seeded = SamplingParams(max_tokens=12, temperature=0.5, seed=11)

    async def alone():
        return (await _collect(engine, ids, seeded))[1].text

    async def in_a_batch():
        others = [_collect(engine, _ids(demo, p), SamplingParams(max_tokens=12, temperature=1.0))
                  for p in PROMPTS]
        results = await asyncio.gather(_collect(engine, ids, seeded), *others)
        return results[0][1].text

    async def other_seed():
        return (await _collect(engine, ids, SamplingParams(max_tokens=12, temperature=0.5,
                                                           seed=12)))[1].text

    first = asyncio.run(alone())
    assert asyncio.run(in_a_batch()) == first
    assert asyncio.run(alone()) == first
    assert asyncio.run(other_seed()) != first


def test_tokens_queued_while_the_loop_was_busy_come_as_one_event(demo, engine,
                                                                 references) -> None:
    """A consumer that falls behind the engine gets what piled up merged, never lost."""
    async def scenario():
        events = []
        async for event in engine.generate(_ids(demo, PROMPTS[1]), GREEDY):
            events.append(event)
            if len(events) == 1:
                wait_until(lambda: engine.active == 0, what="the answer to finish")  # blocks
        return events

    events = asyncio.run(scenario())

    first, merged, finished = events  # the rest of the answer arrived as one Token
    assert isinstance(first, Token) and isinstance(merged, Token)
    assert first.text + merged.text == finished.text == references[PROMPTS[1]]
    assert (finished.reason, finished.completion_tokens) == ("length", 12)


def test_a_stop_string_ends_the_answer_before_it(demo, engine, references) -> None:
    reference = references[PROMPTS[1]]
    stop = reference[len(reference) // 2:][:4]  # text from the middle of the answer
    expected = reference[:reference.index(stop)]

    async def scenario():
        return await _collect(engine, _ids(demo, PROMPTS[1]),
                              SamplingParams(max_tokens=12, temperature=0.0, stop=(stop, "§§")))

    tokens, finished = asyncio.run(scenario())

    assert (finished.reason, finished.text) == ("stop", expected)
    assert "".join(tokens) == expected
    assert finished.completion_tokens < 12
    assert all(stop not in t for t in tokens)


def test_a_stop_string_waits_for_min_tokens(demo, engine, references) -> None:
    reference = references[PROMPTS[1]]
    stop = reference[:6]  # the answer's first words, which it does not repeat
    assert reference.count(stop) == 1

    def answer(min_tokens: int):
        return asyncio.run(_collect(engine, _ids(demo, PROMPTS[1]), SamplingParams(
            max_tokens=12, temperature=0.0, stop=(stop,), min_tokens=min_tokens)))

    assert answer(0)[1].text == ""  # stopped at once
    tokens, finished = answer(4)
    assert (finished.reason, finished.text) == ("length", reference)  # as vLLM: no stop yet
    assert "".join(tokens) == reference


def test_max_tokens_ends_with_length(demo, engine, references) -> None:
    async def scenario():
        return await _collect(engine, _ids(demo, PROMPTS[2]),
                              SamplingParams(max_tokens=1, temperature=0.0))

    tokens, finished = asyncio.run(scenario())
    assert (finished.reason, finished.completion_tokens) == ("length", 1)
    assert references[PROMPTS[2]].startswith(finished.text) and finished.text
    assert "".join(tokens) == finished.text


def test_the_eos_token_ends_the_answer_with_stop(demo) -> None:
    ids = _ids(demo, PROMPTS[0])
    with torch.inference_mode():
        first = int(demo.model(torch.tensor([ids])).logits[0, -1].argmax())
    engine = GenerationEngine(demo.model, demo.tokenizer, max_context=demo.max_context)
    engine.eos_ids = {first}  # the greedy answer's first token is now the end of text
    engine.start()
    try:
        tokens, finished = asyncio.run(_collect(engine, ids, GREEDY))
    finally:
        engine.stop()
    assert tokens == []
    assert (finished.reason, finished.text, finished.completion_tokens) == ("stop", "", 0)


@pytest.mark.parametrize("asks", [{"ignore_eos": True}, {"min_tokens": 3}])
def test_an_answer_asked_to_go_on_never_draws_the_eos_token_too_early(demo, asks) -> None:
    ids = _ids(demo, PROMPTS[0])
    with torch.inference_mode():
        first = int(demo.model(torch.tensor([ids])).logits[0, -1].argmax())
    engine = GenerationEngine(demo.model, demo.tokenizer, max_context=demo.max_context)
    engine.eos_ids = {first}  # what the greedy answer would draw first ends it
    engine.start()
    try:
        _, finished = asyncio.run(_collect(engine, ids, SamplingParams(
            max_tokens=6, temperature=0.0, **asks)))
    finally:
        engine.stop()
    # without them the answer would end at once; min_tokens allows the end after 3 tokens
    assert finished.completion_tokens == 6 or "min_tokens" in asks
    assert finished.completion_tokens >= 3


def test_ignore_eos_on_a_model_without_an_eos_token(demo) -> None:
    engine = GenerationEngine(demo.model, demo.tokenizer, max_context=demo.max_context)
    engine.eos_ids = set()
    engine.start()
    try:
        _, finished = asyncio.run(_collect(engine, _ids(demo, PROMPTS[0]), SamplingParams(
            max_tokens=4, temperature=0.0, ignore_eos=True)))
    finally:
        engine.stop()
    assert (finished.reason, finished.completion_tokens) == ("length", 4)


def test_a_cancelled_request_frees_its_slot_and_the_others_go_on(demo, engine,
                                                                  references) -> None:
    before = engine.tokens_generated

    async def scenario():
        long = engine.generate(_ids(demo, PROMPTS[3]),
                               SamplingParams(max_tokens=400, temperature=0.0))
        other = asyncio.create_task(_collect(engine, _ids(demo, PROMPTS[4]), GREEDY))
        received = 0
        async for event in long:
            assert isinstance(event, Token)
            received += 1
            if received == 3:
                break
        await long.aclose()  # the client went away
        return await other

    tokens, finished = asyncio.run(scenario())

    assert finished.text == "".join(tokens) == references[PROMPTS[4]]
    wait_until(lambda: engine.active == 0, what="the cancelled request to leave")
    assert engine.tokens_generated - before < 400


def test_a_request_cancelled_while_queued_is_never_run(demo, engine) -> None:
    before = engine.tokens_generated
    release = block_engine(engine)

    async def scenario():
        task = asyncio.create_task(_collect(engine, _ids(demo, PROMPTS[0]), GREEDY))
        await asyncio.sleep(0.05)
        assert engine.queued == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    wait_until(lambda: engine.queued == 0, what="the queue to drain")
    assert engine.active == 0
    assert engine.tokens_generated == before


def test_a_full_batch_queues_the_rest(demo, references) -> None:
    engine = GenerationEngine(demo.model, demo.tokenizer, max_batch=2,
                              max_context=demo.max_context)
    engine.start()
    largest: list[int] = []
    try:
        release = block_engine(engine)

        async def scenario():
            tasks = [asyncio.create_task(_collect(engine, _ids(demo, p), GREEDY))
                     for p in PROMPTS]
            await asyncio.sleep(0.05)
            assert engine.queued == len(PROMPTS)
            release.set()
            while not all(t.done() for t in tasks):
                largest.append(engine.active)
                await asyncio.sleep(0.001)
            return [t.result() for t in tasks]

        results = asyncio.run(scenario())
    finally:
        engine.stop()
    assert max(largest) <= 2
    for prompt, (tokens, finished) in zip(PROMPTS, results, strict=True):
        assert finished.text == "".join(tokens) == references[prompt]


def test_a_prompt_beyond_the_window_fails_alone(demo, engine, references) -> None:
    async def scenario():
        too_long = [demo.tokenizer.unk_token_id] * demo.max_context
        return await asyncio.gather(
            _collect(engine, too_long, GREEDY),
            _collect(engine, _ids(demo, PROMPTS[5]), GREEDY))

    (no_tokens, failed), (tokens, finished) = asyncio.run(scenario())

    assert no_tokens == [] and isinstance(failed, Failed)
    assert "window" in failed.error
    assert finished.text == "".join(tokens) == references[PROMPTS[5]]


def test_a_failed_step_fails_its_requests_and_the_engine_keeps_serving(
        demo, references, monkeypatch) -> None:
    engine = GenerationEngine(demo.model, demo.tokenizer, max_context=demo.max_context)
    real_step = engine._decode_step
    failures = iter([True])

    def flaky_step() -> None:
        if next(failures, False):
            raise RuntimeError("out of memory")
        real_step()

    monkeypatch.setattr(engine, "_decode_step", flaky_step)
    engine.start()
    try:
        _, failed = asyncio.run(_collect(engine, _ids(demo, PROMPTS[0]), GREEDY))
        tokens, finished = asyncio.run(_collect(engine, _ids(demo, PROMPTS[1]), GREEDY))
    finally:
        engine.stop()
    assert isinstance(failed, Failed) and "out of memory" in failed.error
    assert finished.text == "".join(tokens) == references[PROMPTS[1]]


def test_call_runs_on_the_engine_thread_between_steps(engine) -> None:
    def where() -> str:
        return threading.current_thread().name

    def broken() -> None:
        raise KeyError("nope")

    async def scenario():
        name = await engine.call(where)
        with pytest.raises(KeyError):
            await engine.call(broken)
        return name

    assert asyncio.run(scenario()) == "generation"
