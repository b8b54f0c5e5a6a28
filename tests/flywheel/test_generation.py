"""The generation helpers the server and the trainer share, on small hand-computed cases."""

import math
from types import SimpleNamespace

import pytest
import torch

from flywheel.generation import (
    adapter_name,
    base_model_name,
    chat_ids,
    eos_ids,
    inverse_cdf,
    left_padded,
    sample_logits,
    until_eos,
)
from tests.fixtures.tiny_models import tiny_tokenizer

CHAT = [{"role": "user", "content": "tell me about my cat"}]


def test_adapter_names_lose_their_dots_and_nothing_else() -> None:
    assert adapter_name("policy-v7") == "policy-v7"
    assert adapter_name("policy-v1.2.3") == "policy-v1_2_3"


def test_the_base_model_is_named_by_its_directory_or_as_given(tmp_path) -> None:
    (tmp_path / "my-model").mkdir()
    assert base_model_name(str(tmp_path / "my-model")) == "my-model"
    assert base_model_name("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert base_model_name("demo") == "demo"


def test_chat_ids_are_the_templates_rendering_ready_for_the_answer() -> None:
    tokenizer = tiny_tokenizer()
    ids = chat_ids(tokenizer, CHAT)
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)

    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(chat_ids(tokenizer, CHAT, add_generation_prompt=False)) < len(ids)


def test_chat_ids_are_truncated_from_the_left() -> None:
    tokenizer = tiny_tokenizer()
    ids = chat_ids(tokenizer, CHAT)

    assert chat_ids(tokenizer, CHAT, max_tokens=3) == ids[-3:]
    assert chat_ids(tokenizer, CHAT, max_tokens=len(ids) + 5) == ids
    assert chat_ids(tokenizer, CHAT, max_tokens=0) == []


@pytest.mark.parametrize(("configured", "expected"), [
    (5, [2, 5]),
    ([7, 5, 2], [2, 5, 7]),
    (None, [2]),
])
def test_the_eos_set_joins_the_generation_config_and_the_tokenizer(configured,
                                                                    expected) -> None:
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=configured))
    assert eos_ids(model, SimpleNamespace(eos_token_id=2)) == expected


def test_until_eos_cuts_at_the_first_end_token() -> None:
    assert until_eos([4, 9, 2, 8, 3], [3, 2]) == [4, 9]
    assert until_eos([4, 9], [3]) == [4, 9]
    assert until_eos([3, 4], [3]) == []


def test_left_padded_rows_are_right_aligned_with_positions_from_zero() -> None:
    ids, attention, positions = left_padded([[5, 6, 7], [8]], pad_id=0)

    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_inverse_cdf_picks_the_first_token_past_the_draw() -> None:
    # weights 1, 0, 3: the CDF is 1, 1, 4 (total 4). Draws of 0.2 and 0.25 land at 0.8 and
    # 1.0: token 0, then past token 1's flat step (zero probability) to token 2.
    weights = torch.tensor([[1.0, 0.0, 3.0]]).repeat(4, 1)
    uniform = torch.tensor([0.0, 0.2, 0.25, 0.9999])

    assert inverse_cdf(weights, uniform).tolist() == [0, 0, 2, 2]
    assert inverse_cdf(weights, uniform, block=2).tolist() == [0, 0, 2, 2]


def test_inverse_cdf_in_blocks_picks_what_one_running_sum_picks() -> None:
    # Vocabularies shorter than, equal to and not a multiple of the block; half the weights
    # zero, some rows' blocks all zero; draws anywhere, up to just below 1.
    generator = torch.Generator().manual_seed(0)
    for vocab in (1, 7, 64, 65, 1000, 30522):
        weights = torch.rand(32, vocab, generator=generator) ** 8
        weights[torch.rand(32, vocab, generator=generator) < 0.5] = 0.0
        weights[:8, : vocab // 2] = 0.0
        weights[:, -1] += 1e-3  # every row has a positive total
        uniform = torch.rand(32, generator=generator)
        uniform[0] = 1.0 - 2**-24
        cdf = weights.cumsum(-1)
        one_pass = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None], right=True)

        picked = inverse_cdf(weights, uniform, block=64)

        assert picked.tolist() == one_pass.squeeze(1).clamp(max=vocab - 1).tolist()
        assert (weights.gather(1, picked[:, None]) > 0).all()


def test_sample_logits_never_draws_an_excluded_token() -> None:
    logits = torch.tensor([[0.0, float("-inf"), math.log(3.0)]]).repeat(5, 1)
    uniform = torch.tensor([0.0, 0.24, 0.25, 0.5, 0.999])

    assert sample_logits(logits, uniform).tolist() == [0, 0, 2, 2, 2]
