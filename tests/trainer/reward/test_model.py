"""The reward model: rendering, left truncation, dynamic padding, scoring, save / load."""

import json

import pytest
import torch

from flywheel.errors import FlywheelError
from trainer.reward import RewardModel
from trainer.reward.model import CONFIG_FILE

PROMPT = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hello?"}]


@pytest.fixture(scope="module")
def minilm() -> RewardModel:
    torch.manual_seed(0)
    return RewardModel.create("minilm", max_length=16, device="cpu").eval()


def test_minilm_renders_roles_and_keeps_the_end(minilm):
    assert minilm.render(PROMPT, "Hi!") == "System: Be nice.\nUser: Hello?\nAssistant: Hi!"
    long_prompt = [{"role": "user", "content": "word " * 100}]
    (ids, answer), = minilm.encode([long_prompt], ["the answer survives"])
    assert len(ids) == 16 and answer == 5  # assistant : the answer survives
    text = minilm.tokenizer.decode(ids)
    assert text.startswith("[CLS]") and text.endswith("assistant : the answer survives [SEP]")


def test_an_answer_longer_than_the_window_is_cut_without_a_warning(minilm, caplog):
    minilm.tokenizer.deprecation_warnings.clear()  # the tokenizer warns once, then never
    (ids, answer), = minilm.encode([PROMPT], ["word " * 600])  # 600 tokens > MiniLM's 512

    assert len(ids) == 16 and answer == 14  # all but [CLS] and [SEP]
    assert "indexing errors" not in caplog.text


def test_minilm_pools_over_the_answer_only(minilm):
    encoded = minilm.encode([PROMPT, PROMPT], ["Hi!", "Hello, you."])
    ids, mask, pool = minilm.collate(encoded)
    assert ids.shape == mask.shape == pool.shape == (2, len(encoded[1][0]))  # no extra padding
    assert minilm.tokenizer.decode(ids[0][pool[0].bool()]) == "assistant : hi!"
    assert minilm.tokenizer.decode(ids[1][pool[1].bool()]) == "assistant : hello, you."
    assert mask[0].sum() == len(encoded[0][0]) < mask[1].sum()


def test_score_is_one_reward_per_answer_whatever_the_batching(minilm):
    completions = ["Hi!", "Hello, how can I help you today?", "Go away.", "Hm."]
    prompts = [PROMPT] * len(completions)
    raw = minilm.score(prompts, completions, normalized=False)
    assert raw.shape == (4,) and raw.dtype == torch.float32
    alone = torch.stack([minilm.score([PROMPT], [c], normalized=False)[0] for c in completions])
    torch.testing.assert_close(raw, alone, atol=1e-4, rtol=1e-4)  # padding changes nothing
    torch.testing.assert_close(minilm.score(prompts, completions, batch_size=3,
                                            normalized=False), raw, atol=1e-4, rtol=1e-4)
    assert minilm.score([], []).shape == (0,)
    with pytest.raises(ValueError):
        minilm.score(prompts, completions[:2])


def test_save_and_load_round_trip_with_normalisation(minilm, tmp_path):
    minilm.reward_mean, minilm.reward_std = 0.5, 2.0
    try:
        path = minilm.save(tmp_path / "rm")
        minilm.save(path)  # saving over a model replaces it
    finally:
        minilm.reward_mean, minilm.reward_std = 0.0, 1.0
    config = json.loads((path / CONFIG_FILE).read_text())
    assert config["backbone"] == "minilm" and config["max_length"] == 16
    assert [p.name for p in tmp_path.iterdir()] == ["rm"]  # no temporary left behind
    loaded = RewardModel.load(path, device="cpu")
    raw = minilm.score([PROMPT], ["Hi!"], normalized=False)
    torch.testing.assert_close(loaded.score([PROMPT], ["Hi!"], normalized=False), raw)
    torch.testing.assert_close(loaded.score([PROMPT], ["Hi!"]), (raw - 0.5) / 2.0)


def test_loading_something_else_fails_clearly(tmp_path):
    with pytest.raises(FlywheelError, match="not a reward model directory"):
        RewardModel.load(tmp_path)
    with pytest.raises(FlywheelError, match="unknown reward backbone"):
        RewardModel.create("bert-large")


def test_policy_lora_backbone_on_a_tiny_model(tiny_model_dirs, tmp_path):
    torch.manual_seed(0)
    model = RewardModel.create("policy-lora", base_model=str(tiny_model_dirs["llama"]),
                               max_length=32, lora_r=4, device="cpu").eval()
    assert model.pooling == "last"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert "Hello?" in model.render(PROMPT, "Hi!")  # through the chat template
    with torch.no_grad():  # a non-zero adapter, so that saving it matters
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    scores = model.score([PROMPT, PROMPT], ["Hi!", "Go away, please."], normalized=False)
    assert scores.shape == (2,)
    loaded = RewardModel.load(model.save(tmp_path / "rm"), device="cpu")
    torch.testing.assert_close(
        loaded.score([PROMPT, PROMPT], ["Hi!", "Go away, please."], normalized=False), scores)
    with pytest.raises(FlywheelError, match="needs the policy model"):
        RewardModel.create("policy-lora")
