"""Candidate evaluation on the demo model, with a reward that is easy to reason about."""

from dataclasses import replace

import pytest
import torch
from peft import get_peft_model

from flywheel.judge.functions import FunctionJudge
from flywheel.model_loading import load_model, lora_config
from trainer.evaluate import EvalConfig, evaluate_candidate, render_markdown


class LengthReward:
    """Longer answers score higher: 1 per 10 characters."""

    def score(self, prompts, completions):
        return torch.tensor([len(c) / 10 for c in completions])


@pytest.fixture(scope="module")
def policy(models_dir):
    loaded = load_model("demo", models_dir=models_dir)
    torch.manual_seed(0)  # before get_peft_model, whose LoRA A matrices draw from it
    model = get_peft_model(loaded.model, lora_config(loaded.model, r=4), adapter_name="cand")
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.5)
    return model, loaded.tokenizer


PROMPTS = [[{"role": "user", "content": f"tell me about topic {i}"}] for i in range(6)]
CONFIG = EvalConfig(max_prompts=6, max_new_tokens=8, batch_size=4, samples=2)


def test_report_compares_candidate_and_base(policy):
    model, tokenizer = policy
    report = evaluate_candidate(model, tokenizer, LengthReward(), PROMPTS, candidate="cand",
                                baseline=None, config=CONFIG)
    assert report["prompts"] == report["answers"] == 6 and report["baseline"] == "base"
    r = report["reward"]
    assert r["delta"] == pytest.approx(r["candidate"] - r["baseline"], abs=1e-6)
    assert r["delta_low"] <= r["delta"] <= r["delta_high"]
    assert 0 <= report["reward_model_win_rate"]["rate"] <= 1
    assert report["kl_to_base"] > 0.1  # the perturbed adapter moved away from the base
    assert 0 < report["length"]["candidate"] <= 8
    assert len(report["samples"]) == 2
    assert report["samples"][0]["prompt"] == "tell me about topic 0"


def test_a_candidate_equal_to_its_baseline_has_zero_kl_and_delta(policy):
    model, tokenizer = policy
    report = evaluate_candidate(model, tokenizer, LengthReward(), PROMPTS, candidate="cand",
                                baseline="cand", config=EvalConfig(max_new_tokens=8,
                                                                   temperature=0))
    assert report["reward"]["delta"] == 0
    assert report["length"]["drift"] == 0


def test_markdown_report_shows_the_figures_and_samples(policy):
    model, tokenizer = policy
    report = evaluate_candidate(model, tokenizer, LengthReward(), PROMPTS[:2],
                                candidate="cand", baseline=None, config=CONFIG)
    page = render_markdown(report)
    assert page.startswith("# cand vs base")
    assert "reward-model win rate" in page and "KL to the base model" in page
    assert "**Prompt:** tell me about topic 0" in page
    assert "Warning" not in page


def test_the_report_names_its_reward_model_and_warns_when_it_is_at_chance(policy):
    model, tokenizer = policy
    report = evaluate_candidate(model, tokenizer, LengthReward(), PROMPTS[:2],
                                candidate="cand", baseline=None, config=CONFIG)
    heldout = {"accuracy": 0.6, "margin": 0.17, "margin_low": -0.003, "margin_high": 0.35,
               "pairs": 124}
    page = render_markdown({**report, "reward_model": "rm-0005",
                            "reward_model_heldout": heldout})
    assert ("judged by the reward model rm-0005 (on its 124 held-out pairs: accuracy 60%, "
            "margin +0.17, 90% CI -0.00 to +0.35)") in page
    assert "no better than chance" in page.split("| measure")[0]
    trusted = render_markdown({**report, "reward_model": "rm-0005",
                               "reward_model_heldout": {**heldout, "margin_low": 0.02}})
    assert "90% CI +0.02 to +0.35" in trusted and "Warning" not in trusted


def test_evaluation_needs_prompts(policy):
    model, tokenizer = policy
    with pytest.raises(ValueError, match="held-out prompts"):
        evaluate_candidate(model, tokenizer, LengthReward(), [], candidate="cand",
                           baseline=None)


def test_few_prompts_are_answered_again_up_to_max_prompts(policy):
    model, tokenizer = policy
    config = replace(CONFIG, max_prompts=10)
    report = evaluate_candidate(model, tokenizer, LengthReward(), PROMPTS[:2], candidate="cand",
                                baseline=None, config=config)
    assert (report["prompts"], report["answers"]) == (2, 10)
    assert report["reward_model_win_rate"]["n"] == 10


def test_a_configured_judge_adds_its_win_rate_beside_the_reward_models(policy):
    model, tokenizer = policy
    longer = FunctionJudge(lambda prompt, a, b=None: "a" if len(a) > len(b) else
                           "b" if len(b) > len(a) else "tie")
    report = evaluate_candidate(model, tokenizer, LengthReward(), PROMPTS, candidate="cand",
                                baseline=None, config=CONFIG, judge=longer)
    judged = report["judge_win_rate"]
    assert judged["wins"] + judged["losses"] + judged["ties"] == report["answers"]
    assert judged["calls"] == 2 * report["answers"] and judged["position_flip_rate"] == 0
    # It judges by length, as the reward model scores: the two win rates are one.
    assert judged["rate"] == pytest.approx(report["reward_model_win_rate"]["rate"])
    assert "judge win rate" in render_markdown(report)
    assert "judge_win_rate" not in evaluate_candidate(
        model, tokenizer, LengthReward(), PROMPTS, candidate="cand", baseline=None,
        config=CONFIG)
