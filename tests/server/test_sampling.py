import math

import pytest
import torch

from server.sampling import (
    MAX_STOP_CHARS,
    SamplingParams,
    TextStream,
    sample_next_tokens,
    top_p_filter,
)

INF = float("-inf")


def _logits(*probs: float) -> torch.Tensor:
    return torch.tensor([math.log(p) for p in probs])


@pytest.mark.parametrize("bad", [
    {"max_tokens": 0},
    {"temperature": -0.1},
    {"temperature": 2.5},
    {"top_p": 0.0},
    {"top_p": 1.5},
    {"stop": ("a", "b", "c", "d", "e")},
    {"stop": ("",)},
    {"stop": ("x" * (MAX_STOP_CHARS + 1),)},
    {"seed": 2**31},
    {"seed": -(2**31) - 1},
    {"min_tokens": -1},
    {"max_tokens": 4, "min_tokens": 5},
])
def test_sampling_params_refuse_what_openai_refuses(bad) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_sampling_params_accept_the_edges() -> None:
    SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0,
                   stop=("a", "b", "c", "x" * MAX_STOP_CHARS), seed=2**31 - 1)
    SamplingParams(temperature=2.0, top_p=1e-6, seed=-(2**31))
    SamplingParams(max_tokens=4, min_tokens=4, ignore_eos=True)


# -- top_p_filter ---------------------------------------------------------------------------


def test_top_p_keeps_the_smallest_nucleus_in_the_original_order() -> None:
    # probabilities 0.1, 0.5, 0.15, 0.25: sorted 0.5, 0.25, 0.15, 0.1, and the mass of
    # the better tokens before each is 0, 0.5, 0.75, 0.9.
    logits = _logits(0.1, 0.5, 0.15, 0.25).repeat(5, 1)
    top_p = torch.tensor([0.4, 0.6, 0.8, 0.95, 1.0])

    kept = top_p_filter(logits, top_p).isfinite()

    assert kept.tolist() == [
        [False, True, False, False],
        [False, True, False, True],
        [False, True, True, True],
        [True, True, True, True],
        [True, True, True, True],
    ]


def test_top_p_leaves_kept_logits_unchanged_and_never_empties_a_row() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, -1.0], [0.0, 0.0, 10.0, 0.0]])
    out = top_p_filter(logits, torch.tensor([1e-9, 0.5]))

    assert out[0].tolist() == [3.0, INF, INF, INF]
    assert out[1].tolist() == [INF, INF, 10.0, INF]


# -- sample_next_tokens ---------------------------------------------------------------------


def test_temperature_zero_is_greedy_whatever_the_draw() -> None:
    logits = torch.tensor([[0.1, 2.0, 1.9], [5.0, 4.0, 4.5]])

    for uniform in (torch.zeros(2), torch.full((2,), 0.999)):
        tokens = sample_next_tokens(logits, torch.zeros(2), torch.ones(2), uniform)
        assert tokens.tolist() == [1, 0]


def test_greedy_and_sampled_rows_mix_in_one_batch() -> None:
    # Row 1 samples, but its nucleus holds only token 2: the sample is certain.
    logits = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 6.0]])
    tokens = sample_next_tokens(logits, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]),
                                torch.tensor([0.5, 0.01]))
    assert tokens.tolist() == [1, 2]


def test_each_row_inverts_its_own_cdf_at_its_own_draw() -> None:
    # p = (0.1, 0.2, 0.3, 0.4): the CDF is 0.1, 0.3, 0.6, 1.0. A draw picks the first token
    # whose CDF exceeds it.
    logits = _logits(0.1, 0.2, 0.3, 0.4).repeat(6, 1)
    uniform = torch.tensor([0.0, 0.09, 0.1, 0.35, 0.6, 0.999])

    tokens = sample_next_tokens(logits, torch.ones(6), torch.ones(6), uniform)

    assert tokens.tolist() == [0, 0, 1, 2, 3, 3]


def test_temperature_scales_each_row_on_its_own() -> None:
    # softmax([0, log 3] / T): T=1 gives (0.25, 0.75), T=0.5 gives (0.1, 0.9). A draw of
    # 0.2 lands on token 0 at T=1 and on token 1 at T=0.5.
    logits = _logits(1.0, 3.0).repeat(2, 1)
    tokens = sample_next_tokens(logits, torch.tensor([1.0, 0.5]), torch.ones(2),
                                torch.full((2,), 0.2))
    assert tokens.tolist() == [0, 1]


def test_sampling_draws_from_the_softmax_of_logits_over_temperature() -> None:
    rows = 4000
    logits = _logits(1.0, 3.0).repeat(rows, 1)
    uniform = torch.rand(rows, generator=torch.Generator().manual_seed(0))
    hot = sample_next_tokens(logits, torch.ones(rows), torch.ones(rows), uniform)
    cool = sample_next_tokens(logits, torch.full((rows,), 0.5), torch.ones(rows), uniform)

    assert hot.float().mean().item() == pytest.approx(0.75, abs=0.03)
    assert cool.float().mean().item() == pytest.approx(0.9, abs=0.02)


def test_sampling_never_leaves_the_nucleus() -> None:
    rows = 500
    logits = _logits(0.5, 0.3, 0.15, 0.05).repeat(rows, 1)
    uniform = torch.rand(rows, generator=torch.Generator().manual_seed(1))
    tokens = sample_next_tokens(logits, torch.ones(rows), torch.full((rows,), 0.7), uniform)

    assert set(tokens.tolist()) == {0, 1}


# -- TextStream -----------------------------------------------------------------------------


def _feed(stream: TextStream, texts: list[str]) -> list[str]:
    return [stream.update(t) for t in texts]


def test_text_stream_sends_the_new_part_of_each_decode() -> None:
    stream = TextStream()
    assert _feed(stream, ["Hel", "Hello", "Hello wor", "Hello world"]) == [
        "Hel", "lo", " wor", "ld"]
    assert stream.finish("Hello world") == ""
    assert stream.sent == "Hello world"


def test_text_stream_holds_back_a_possible_start_of_a_stop_string() -> None:
    stream = TextStream(stop=("END",))
    deltas = _feed(stream, ["Hi E", "Hi EN", "Hi ENx", "Hi ENx E"])

    assert deltas == ["Hi ", "", "ENx", " "]  # "E", "EN" held; "ENx" is no stop after all
    assert not stream.stopped
    assert stream.finish("Hi ENx E") == "E"  # at the end nothing is held back
    assert stream.sent == "Hi ENx E"


def test_text_stream_cuts_at_a_stop_string_and_never_sends_it() -> None:
    stream = TextStream(stop=("###", "\n\n"))
    deltas = _feed(stream, ["one #", "one ##", "one ### two"])

    assert stream.stopped
    assert deltas == ["one ", "", ""]
    assert stream.finish("one ### two") == ""
    assert stream.sent == "one "


def test_text_stream_stop_string_across_many_updates() -> None:
    stream = TextStream(stop=("user:",))
    text, deltas = "", []
    for piece in ["ok", " then", " us", "er", ": next"]:
        text += piece
        deltas.append(stream.update(text))
    assert stream.stopped
    assert "".join(deltas) == stream.sent == "ok then "


def test_text_stream_lets_stop_strings_pass_until_told_to_stop() -> None:
    stream = TextStream(stop=("END",))
    assert stream.update("a END b", stops=False) == "a END b"  # before min_tokens
    assert stream.update("a END b E") == " "  # now a stop may begin: "E" is held
    assert stream.update("a END b END c") == ""
    assert stream.stopped and stream.sent == "a END b "


def test_text_stream_waits_for_an_incomplete_character() -> None:
    stream = TextStream()
    assert stream.update("caf\ufffd") == ""
    assert stream.update("café") == "café"
    assert stream.finish("café!") == "!"
    # An answer that ends inside a character drops the broken tail.
    stream = TextStream()
    assert stream.update("ok\ufffd") == ""
    assert stream.finish("ok\ufffd") == "ok"
