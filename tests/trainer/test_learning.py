"""PPO visibly learns a synthetic preference, end to end: simulated votes → a reward model
that learns them → PPO that raises the rate of preferred words while the KL stays capped.

The random demo model cannot serve as the policy here: its logits span about ±1.3 nats over
30,522 tokens, so no LoRA update can make any word much likelier. The policy is instead the
demo's architecture over a word-level vocabulary, pre-trained here for a few seconds on
answers shaped like the votes' (`It is X and Y, that is what I think about Z.`), with the
adjectives X, Y drawn uniformly from good, bad and neutral words — a base model that knows
the preferred words but does not prefer them. The reward model is the real MiniLM one.
"""

import math
import random
import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tests.trainer.synthetic import BAD_WORDS, GOOD_WORDS, TOPICS, synthetic_pairs, synthetic_prompt
from tests.trainer.word_model import word_tokenizer
from trainer.ppo import PPOConfig, prepare_policy, train_ppo
from trainer.reward import RewardConfig, train_reward_model

pytestmark = pytest.mark.slow

NEUTRAL = ("long", "short", "old", "new", "quiet", "busy", "simple", "early", "late", "small",
           "large", "odd")
ADJECTIVES = GOOD_WORDS + BAD_WORDS + NEUTRAL
TEMPLATE = "It is {} and {}, that is what I think about {}."
PPO = PPOConfig(steps=15, batch_size=32, minibatch_size=16, ppo_epochs=2, max_new_tokens=20,
                learning_rate=2e-3, beta=0.1, seed=0)


def learning_tokenizer() -> PreTrainedTokenizerFast:
    text = " ".join(["user assistant system : tell me about", *ADJECTIVES, *TOPICS, TEMPLATE])
    return word_tokenizer(sorted(set(re.findall(r"\w+|[^\w\s]", text.lower()))))


def pretrained_policy(tokenizer, *, steps: int = 60) -> LlamaForCausalLM:
    """The demo's shape, taught the answer template with uniformly drawn adjectives."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = random.Random(0)
    tokenizer.padding_side = "right"
    for _ in range(steps):
        chats = [synthetic_prompt(rng) + [{"role": "assistant", "content": TEMPLATE.format(
            *rng.sample(ADJECTIVES, 2), rng.choice(TOPICS))}] for _ in range(32)]
        batch = tokenizer([tokenizer.apply_chat_template(c, tokenize=False) for c in chats],
                          return_tensors="pt", padding=True, add_special_tokens=False)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokenizer.padding_side = "left"
    return model.eval()


def sample_answers(model, tokenizer, *, n: int = 128) -> list[str]:
    """Answers to `n` held-out prompts, with a fixed sampling seed."""
    rng = random.Random(99)
    texts = [tokenizer.apply_chat_template(synthetic_prompt(rng), add_generation_prompt=True,
                                           tokenize=False) for _ in range(n)]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(123)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=20,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)


def per_answer(answers: list[str], words: tuple[str, ...]) -> list[int]:
    return [sum(w in words for w in a.split()) for a in answers]


def test_ppo_learns_the_preference_the_reward_model_learned_from_votes():
    heldout = synthetic_pairs(32, seed=1, first_id=1000)
    reward_model, metrics = train_reward_model(
        synthetic_pairs(48, seed=0), heldout,
        RewardConfig(max_length=32, batch_size=8, epochs=2, lr=2e-4, device="cpu"))
    assert metrics["accuracy"] >= 0.9, metrics

    tokenizer = learning_tokenizer()
    policy = prepare_policy(pretrained_policy(tokenizer), PPO)
    with policy.disable_adapter():
        before = sample_answers(policy, tokenizer)
    rng = random.Random(5)
    prompts = [synthetic_prompt(rng) for _ in range(64)]
    result = train_ppo(policy, tokenizer, prompts, lambda p, c: reward_model.score(p, c), PPO)
    after = sample_answers(result.model, tokenizer)

    good_before, good_after = per_answer(before, GOOD_WORDS), per_answer(after, GOOD_WORDS)
    mean_before, mean_after = sum(good_before) / len(before), sum(good_after) / len(after)
    diffs = [a - b for a, b in zip(good_after, good_before, strict=True)]
    noise = math.sqrt(sum((d - (mean_after - mean_before)) ** 2 for d in diffs)
                      / (len(diffs) - 1) / len(diffs))
    report = (f"good words per answer {mean_before:.3f} -> {mean_after:.3f} (noise {noise:.3f}); "
              f"bad {sum(per_answer(before, BAD_WORDS)) / len(before):.3f} -> "
              f"{sum(per_answer(after, BAD_WORDS)) / len(after):.3f}; "
              f"final KL {result.metrics[-1]['kl_k3']:.2f}")
    print(report)
    assert mean_after >= 1.3 * mean_before and mean_after - mean_before >= 3 * noise, report
    assert result.stop_reason == "steps"
    assert all(log["kl_k3"] < PPO.kl_cap for log in result.metrics), report
