"""Policy-optimisation benchmark: one cycle's policy stage, from the base demo model,
against a known preference, judged as `bench/loop.py` judges.

    python bench/policy.py [--method ppo] [--recipe '{"steps": 80}'] [--preference P]
                           [--prompts 64] [--judge 256] [--seed 0]

The closed loop mixes four things: the crowd's noise, the reward model, the policy method
and the gate. This isolates the third: the reward is the preference itself (a perfect
reward model), so what the policy reaches here bounds what the loop can reach with the same
recipe. The recipe starts from `bench/loop.py`'s CYCLE section for the method; `--recipe`
overrides its fields. Prints one JSON line: win_rate vs the base (a tie counts half) with
its 95% interval, mean preference scores, kl_to_base (nats per answer at temperature 0.7,
as the promotion gate measures it), steps run, stop reason and minutes.
"""

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop import CYCLE, KL_CAP, _sample  # noqa: E402

from flywheel.model_loading import load_model  # noqa: E402
from flywheel.settings import Settings  # noqa: E402
from flywheel.simulate.preferences import load_preference  # noqa: E402
from trainer.dpo import DPOConfig, train_online_dpo  # noqa: E402
from trainer.evaluate import EvalConfig, evaluate_candidate  # noqa: E402
from trainer.ppo import PPOConfig, prepare_policy, train_ppo  # noqa: E402


class PreferenceScorer:
    """The preference as a reward model: `score(prompts, answers) -> [B]`."""

    def __init__(self, score):
        self._score = score

    def score(self, prompts, answers) -> torch.Tensor:
        return torch.tensor([self._score(p[-1]["content"], a)
                             for p, a in zip(prompts, answers, strict=True)])

    __call__ = score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("ppo", "online_dpo"), default="ppo")
    parser.add_argument("--recipe", type=json.loads, default={},
                        help="JSON fields over bench/loop.py's section for the method")
    parser.add_argument("--preference", default="flywheel.simulate.preferences:kindness")
    parser.add_argument("--prompts", type=int, default=64, help="training prompts")
    parser.add_argument("--judge", type=int, default=256, help="prompts judged side by side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    loaded = load_model("demo", models_dir=Settings().models_dir, device="cpu")
    preference = load_preference(args.preference)
    rng = random.Random(args.seed)
    prompts = [[{"role": "user", "content": preference.prompt(rng)}] for _ in range(args.prompts)]
    scorer = PreferenceScorer(preference.score)
    section = "ppo" if args.method == "ppo" else "dpo"
    fields = {**CYCLE[section], **args.recipe, "seed": args.seed}
    started = time.monotonic()
    if args.method == "ppo":
        config = PPOConfig(**fields)
        policy = prepare_policy(loaded.model, config)
        result = train_ppo(policy, loaded.tokenizer, prompts, scorer, config)
    else:
        config = DPOConfig(**fields)
        policy = prepare_policy(loaded.model, PPOConfig(seed=args.seed))
        result = train_online_dpo(policy, loaded.tokenizer, prompts, scorer, config)
    minutes = (time.monotonic() - started) / 60

    report = evaluate_candidate(policy, loaded.tokenizer, scorer, prompts, candidate="default",
                                baseline=None, config=EvalConfig(max_prompts=64,
                                                                 max_new_tokens=24))
    judged = [preference.prompt(random.Random(args.seed + 7_000 + i)) for i in range(args.judge)]
    answers = _sample(policy, loaded.tokenizer, judged, seed=2)
    with policy.disable_adapter():
        base_answers = _sample(policy, loaded.tokenizer, judged, seed=1)
    scores = [preference.score(p, a) for p, a in zip(judged, answers, strict=True)]
    base_scores = [preference.score(p, a) for p, a in zip(judged, base_answers, strict=True)]
    wins = [1.0 if a > b else 0.5 if a == b else 0.0
            for a, b in zip(scores, base_scores, strict=True)]
    rate = sum(wins) / len(wins)
    half = 1.96 * math.sqrt(max(rate * (1 - rate), 1e-9) / len(wins))
    print(json.dumps({
        "method": args.method, "preference": args.preference, "recipe": fields,
        "win_rate": round(rate, 3), "interval": [round(rate - half, 3), round(rate + half, 3)],
        "mean_score": round(sum(scores) / len(scores), 3),
        "base_mean_score": round(sum(base_scores) / len(base_scores), 3),
        "kl_to_base": round(report["kl_to_base"], 3), "kl_cap": KL_CAP,
        "steps": len(result.metrics), "stop_reason": result.stop_reason,
        "score_curve": [round(sum(m["score"] for m in result.metrics[i:i + 5]) / 5, 2)
                        for i in range(0, len(result.metrics), 5)],
        "last_logs": result.metrics[-3:], "minutes": round(minutes, 2),
        "samples": answers[:4],
        "first_word": _first_word(policy, loaded.tokenizer, judged[0])}))


@torch.no_grad()
def _first_word(policy, tokenizer, prompt: str) -> dict[str, float]:
    """The policy's five likeliest first adjectives after "it is" (a look at what it learned)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                         add_generation_prompt=True, tokenize=False) + "it is"
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    probs = policy(input_ids=ids).logits[0, -1].softmax(-1)
    top = probs.topk(5)
    return {tokenizer.decode([int(i)]): round(float(p), 3)
            for p, i in zip(top.values, top.indices, strict=True)}


if __name__ == "__main__":
    main()
