"""Sequences for training: chat encoding of answers, cutting to length, the padded layout
(whose log-probs must not depend on the padding) and seeded sampling."""

import pytest
import torch

from tests.fixtures.tiny_models import build_tiny_model, tiny_tokenizer
from trainer.rollout import (
    KLCap,
    answer_logprobs,
    decode,
    draw,
    encode_exchange,
    encode_prompt,
    eos_ids,
    fit,
    make_batch,
    prompt_batches,
    response_mask,
    sample,
)

CHAT = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_an_answer_is_its_templated_tokens_through_eos(tokenizer):
    model = build_tiny_model("llama", tokenizer=tokenizer)
    eos = eos_ids(model, tokenizer)
    prompt, answer = encode_exchange(tokenizer, CHAT, "I am fine, thanks.", eos)
    assert prompt == encode_prompt(tokenizer, CHAT, 512)
    assert tokenizer.convert_ids_to_tokens(answer) == ["i", "am", "fine", ",", "thanks", ".",
                                                       "[SEP]"]
    assert encode_exchange(tokenizer, CHAT, "", eos)[1] == [tokenizer.eos_token_id]


def test_fit_keeps_the_end_of_the_prompt_and_the_start_of_the_answers():
    prompt, answers = list(range(10)), [[100, 101, 102], [200]]
    assert fit(prompt, answers, 20) == (prompt, answers)
    assert fit(prompt, answers, 8) == ([5, 6, 7, 8, 9], [[100, 101, 102], [200]])
    # an answer longer than half the budget leaves the prompt half of it
    assert fit(prompt, [list(range(100, 110))], 8) == ([6, 7, 8, 9], [[100, 101, 102, 103]])
    assert fit([1, 2], [list(range(100, 110))], 8) == ([1, 2], [list(range(100, 106))])


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_answer_logprobs_do_not_depend_on_padding(tokenizer, kind):
    model = build_tiny_model(kind, tokenizer=tokenizer)
    exchanges = [([5, 6, 7], [8, 9]), ([5], [10, 11, 12, 13]), ([5, 6, 7, 8, 9], [14])]
    batch = make_batch(*zip(*exchanges, strict=True), tokenizer.pad_token_id, torch.device("cpu"))
    assert batch.prompt_len == 5 and batch.sequences.shape == (3, 9)
    assert batch.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    with torch.no_grad():
        together = answer_logprobs(model, batch)
        for row, (prompt, answer) in enumerate(exchanges):
            ids = torch.tensor([prompt + answer])
            alone = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1:-1], -1)
            expected = alone.gather(1, torch.tensor(answer)[:, None]).squeeze(1)
            assert torch.allclose(together[row, :len(answer)], expected, atol=1e-5)


def test_models_that_transform_their_logits_take_the_full_forward_pass(tokenizer):
    model = build_tiny_model("llama", tokenizer=tokenizer)
    batch = make_batch([[5, 6, 7], [5]], [[8, 9], [10, 11, 12]], tokenizer.pad_token_id,
                       torch.device("cpu"))
    with torch.no_grad():
        selective = answer_logprobs(model, batch, temperature=0.5)
        model.config.final_logit_softcapping = 30.0  # ignored by Llama: the same logits
        full = answer_logprobs(model, batch, temperature=0.5)
    assert torch.allclose(selective, full, atol=1e-5)
    assert full[0, 2] == 0.0  # padding


def test_sampling_is_seeded_by_its_own_generator_and_stops_at_eos(tokenizer):
    model = build_tiny_model("llama", tokenizer=tokenizer)
    eos = eos_ids(model, tokenizer)
    prompts = [encode_prompt(tokenizer, CHAT, 64), [5, 6]]

    def run(seed):
        return sample(model, prompts, eos=eos, pad_id=tokenizer.pad_token_id, max_new_tokens=6,
                      temperature=0.7, generator=torch.Generator().manual_seed(seed))

    global_state = torch.random.get_rng_state()
    with torch.no_grad():
        first, again, other = run(0), run(0), run(1)
    assert torch.equal(torch.random.get_rng_state(), global_state)
    assert torch.equal(first.batch.sequences, again.batch.sequences)
    assert not torch.equal(first.batch.sequences, other.batch.sequences)
    assert first.batch.answers.shape == (2, 6) and first.values is None
    # the sampled log-probs are the model's, at the sampling temperature
    with torch.no_grad():
        logprobs = answer_logprobs(model, first.batch, temperature=0.7)
    mask = first.batch.mask.bool()
    assert torch.allclose(logprobs[mask], first.logprobs[mask], atol=1e-4)
    assert all(isinstance(text, str) for text in decode(tokenizer, first.batch, eos))


def test_sampling_ends_each_answer_at_its_first_eos(tokenizer):
    model = build_tiny_model("llama", tokenizer=tokenizer)
    eos = torch.tensor([tokenizer.eos_token_id])
    forced = sample(_Always(model, tokenizer.eos_token_id), [[5, 6], [7]], eos=eos,
                    pad_id=tokenizer.pad_token_id, max_new_tokens=4, temperature=1.0,
                    generator=torch.Generator().manual_seed(0))
    assert forced.batch.answers.tolist() == [[tokenizer.eos_token_id]] * 2
    assert forced.batch.mask.tolist() == [[1.0], [1.0]]
    assert decode(tokenizer, forced.batch, eos) == ["", ""]
    assert response_mask(torch.tensor([[5, 102, 7, 102], [5, 6, 7, 8]]), torch.tensor([102])
                         ).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


class _Always(torch.nn.Module):
    """The model, with every token but `token` made impossible."""

    def __init__(self, model, token):
        super().__init__()
        self.model, self.token = model, token

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits = torch.full_like(out.logits, -1e4)
        out.logits[..., self.token] = 0.0
        return out


def test_prompt_batches_go_through_every_prompt_before_repeating_one():
    batches = prompt_batches(5, 2, torch.Generator().manual_seed(0))
    first = [next(batches) for _ in range(5)]  # 10 indices: two full shuffles
    flat = [i for batch in first for i in batch]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:]) == list(range(5))


def test_draw_samples_the_softmax_and_reports_log_probs_and_entropy():
    probs = torch.tensor([0.2, 0.3, 0.5, 0.0])
    logits = torch.log(probs).clamp(min=-1e4).repeat(20_000, 1)
    tokens, logprobs, entropy = draw(logits, 1.0, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=4) / len(tokens)
    assert torch.allclose(counts, probs, atol=0.015) and counts[3] == 0
    assert torch.allclose(logprobs, torch.log(probs)[tokens], atol=1e-5)
    expected = -(probs[:3] * probs[:3].log()).sum()
    assert torch.allclose(entropy, expected.expand(len(tokens)), atol=1e-5)
    hot_tokens, hot_logprobs, _ = draw(logits[:8], 2.0)  # temperature 2: softmax(logits / 2)
    assert torch.allclose(hot_logprobs, torch.log_softmax(logits[0] / 2, -1)[hot_tokens])


def test_the_kl_cap_keeps_the_last_weights_within_it_and_puts_them_back_when_over():
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    cap = KLCap([weight], cap=0.5)
    with torch.no_grad():
        weight.add_(1.0)
    assert not cap.went_over(0.5, step=0)  # at the cap is within it: these weights are kept
    with torch.no_grad():
        weight.mul_(10.0)
    assert cap.went_over(0.51, step=1)
    assert weight.tolist() == [2.0, 3.0]
