"""Offline evaluation of a candidate adapter before an operator sees it.

On held-out prompts the candidate and the baseline (the live adapter, else the base model)
answer side by side in one mixed-adapter batch; the reward model scores both. The report
holds the reward difference with a bootstrap interval, the reward model's win rate, the
candidate's KL to the base model, length drift, the share of empty or degenerate answers,
and a few answer pairs to read; with a judge (`flywheel.judge`), the judge's win rate on
every answer pair (each judged in both orders) and its position-flip rate.
`render_markdown` turns it into the readable version.
"""

from dataclasses import asdict, dataclass
from itertools import cycle, islice

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from feedback.stats import paired_mean_ci, win_rate
from flywheel.generation import BASE_ADAPTER, chat_ids, eos_ids, left_padded, until_eos
from flywheel.judge.evaluation import judge_win_rate
from flywheel.judge.rubric import conversation_text
from trainer.rlhf.ppo_math import logprobs_from_logits
from trainer.sampling import sampling_kwargs

Messages = list[dict[str, str]]


@dataclass
class EvalConfig:
    max_prompts: int = 64  # held-out prompts answered by each side
    max_new_tokens: int = 64
    temperature: float = 0.7  # sampled answers, as users would get them
    batch_size: int = 16
    samples: int = 5  # answer pairs kept in the report for people to read
    degenerate_unique_ratio: float = 0.3  # fewer distinct tokens than this share: degenerate
    seed: int = 0


@torch.no_grad()
def evaluate_candidate(policy: PeftModel, tokenizer: PreTrainedTokenizerBase, reward_model,
                       prompts: list[Messages], *, candidate: str, baseline: str | None,
                       config: EvalConfig | None = None, judge=None) -> dict:
    """Compare adapter `candidate` with adapter `baseline` (None: the base model), both
    loaded in `policy`. Returns the report as a JSON-ready dict.

    With fewer held-out prompts than `config.max_prompts`, prompts are answered more than
    once (each answer sampled anew), so a store with few distinct questions still gives
    `max_prompts` answer pairs to judge rather than a handful."""
    config = config or EvalConfig()
    if not prompts:
        raise ValueError("evaluation needs held-out prompts")
    distinct = min(len(prompts), config.max_prompts)
    prompts = list(islice(cycle(prompts), config.max_prompts))
    policy.eval()  # peft refuses mixed-adapter batches in training mode
    # The same draws for both sides (common random numbers: a paired comparison's noise
    # shrinks), from a generator of the evaluation's own.
    cand = _answers(policy, tokenizer, prompts, candidate, config, seed=config.seed)
    base = _answers(policy, tokenizer, prompts, baseline or BASE_ADAPTER, config, seed=config.seed)
    cand_text = [a["text"] for a in cand]
    base_text = [a["text"] for a in base]
    cand_reward = reward_model.score(prompts, cand_text).tolist()
    base_reward = reward_model.score(prompts, base_text).tolist()
    deltas = [c - b for c, b in zip(cand_reward, base_reward, strict=True)]
    mean, low, high = paired_mean_ci(deltas, seed=config.seed)
    wins = sum(d > 0 for d in deltas)
    ties = sum(d == 0 for d in deltas)
    judged = win_rate(wins, len(deltas) - wins - ties, ties, seed=config.seed)
    kl = _kl_to_base(policy, cand, candidate, config.temperature)
    cand_len = _mean(len(a["ids"]) for a in cand)
    base_len = _mean(len(a["ids"]) for a in base)
    judged_by = {} if judge is None else {"judge_win_rate": judge_win_rate(
        judge, [conversation_text(p) for p in prompts], cand_text, base_text, seed=config.seed)}
    return {
        **judged_by,
        "candidate": candidate, "baseline": baseline or "base", "prompts": distinct,
        "answers": len(prompts),
        "reward": {"candidate": _mean(cand_reward), "baseline": _mean(base_reward),
                   "delta": mean, "delta_low": low, "delta_high": high},
        "reward_model_win_rate": asdict(judged),
        "kl_to_base": kl,
        "length": {"candidate": cand_len, "baseline": base_len,
                   "drift": cand_len / base_len - 1 if base_len else None},
        "empty_rate": _mean(not a["text"].strip() for a in cand),
        "degenerate_rate": _mean(_degenerate(a["ids"], config) for a in cand),
        "samples": [{"prompt": p[-1]["content"], "candidate": c, "baseline": b,
                     "candidate_reward": cr, "baseline_reward": br}
                    for p, c, b, cr, br in list(zip(prompts, cand_text, base_text, cand_reward,
                                                    base_reward, strict=True))[:config.samples]],
        "config": asdict(config),
    }


def render_markdown(report: dict) -> str:
    """The report as a page an operator reads in a minute."""
    r, wr, length = report["reward"], report["reward_model_win_rate"], report["length"]
    lines = [
        f"# {report['candidate']} vs {report['baseline']}",
        "",
        *_judged_by(report),
        "| measure | value |",
        "|---|---|",
        f"| reward, candidate − baseline | {r['delta']:+.3f} "
        f"(95% CI {r['delta_low']:+.3f} to {r['delta_high']:+.3f}) |",
        f"| reward-model win rate | {wr['rate']:.0%} (95% CI {wr['low']:.0%}–{wr['high']:.0%}) |",
        *_judge_row(report.get("judge_win_rate")),
        f"| KL to the base model | {report['kl_to_base']:.3f} nats per answer |",
        f"| answer length | {length['candidate']:.1f} vs {length['baseline']:.1f} tokens |",
        f"| empty answers | {report['empty_rate']:.0%} |",
        f"| degenerate answers | {report['degenerate_rate']:.0%} |",
        "",
        "## Sample answers",
    ]
    for s in report["samples"]:
        lines += ["", f"**Prompt:** {s['prompt']}", "",
                  f"- candidate ({s['candidate_reward']:+.2f}): {s['candidate']}",
                  f"- baseline ({s['baseline_reward']:+.2f}): {s['baseline']}"]
    return "\n".join(lines) + "\n"


def _judged_by(report: dict) -> list[str]:
    """Which reward model judged (the cycle adds it to the report) and how it did on its
    held-out pairs, with a warning when its margin there is no better than chance."""
    judge = " ".join(filter(None, ("the reward model", report.get("reward_model"))))
    heldout = report.get("reward_model_heldout") or {}
    if heldout.get("margin_low") is None:
        return [f"On {report['prompts']} held-out prompts, judged by {judge}:", ""]
    lines = [f"On {report['prompts']} held-out prompts, judged by {judge} (on its "
             f"{heldout['pairs']} held-out pairs: accuracy {heldout['accuracy']:.0%}, margin "
             f"{heldout['margin']:+.2f}, 90% CI {heldout['margin_low']:+.2f} to "
             f"{heldout['margin_high']:+.2f}):", ""]
    if heldout["margin_low"] <= 0:
        lines[:0] = ["**Warning: the reward model agrees with the voters no better than "
                     "chance on its held-out pairs, and it trained this candidate. Its win "
                     "rate below says little about what people will prefer.**", ""]
    return lines


def _judge_row(judged: dict | None) -> list[str]:
    if not judged or judged["rate"] is None:
        return []
    return [f"| judge win rate ({judged['judge']}) | {judged['rate']:.0%} (95% CI "
            f"{judged['low']:.0%}–{judged['high']:.0%}; position flips "
            f"{judged['position_flip_rate'] or 0:.0%}) |"]


def _answers(policy, tokenizer, prompts, adapter: str, config: EvalConfig, *,
             seed: int) -> list[dict]:
    """Sampled answers from one adapter: [{"ids": prompt+answer ids, "prompt_len", "text"}]."""
    out = []
    device = next(policy.parameters()).device
    eos = eos_ids(policy, tokenizer)
    sampling = sampling_kwargs(config.temperature, seed=seed, device=device)
    for start in range(0, len(prompts), config.batch_size):
        rows = [chat_ids(tokenizer, p) for p in prompts[start:start + config.batch_size]]
        ids, attention, _ = left_padded(rows, tokenizer.pad_token_id, device)
        generated = policy.generate(
            input_ids=ids, attention_mask=attention, adapter_names=[adapter] * len(rows),
            **sampling, max_new_tokens=config.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id)
        for prompt, row in zip(rows, generated[:, ids.shape[1]:].tolist(), strict=True):
            answer = until_eos(row, eos)
            out.append({"ids": answer, "prompt_ids": prompt,
                        "text": tokenizer.decode(answer, skip_special_tokens=True)})
    return out


def _kl_to_base(policy, answers: list[dict], adapter: str, temperature: float) -> float:
    """Mean over answers of Σ_t log π(a_t) − log π_base(a_t), on the candidate's own
    samples (a Monte-Carlo estimate of KL(π ‖ π_base)), both at the temperature the samples
    were drawn at (1 for greedy answers): samples drawn at 0.7 but scored at 1 estimate no
    KL at all, and can read below zero for an adapter far from the base."""
    temperature = temperature if temperature > 0 else 1.0
    total = 0.0
    device = next(policy.parameters()).device
    for a in answers:
        if not a["ids"]:
            continue
        ids = torch.tensor([a["prompt_ids"] + a["ids"]], device=device)
        start = len(a["prompt_ids"])
        targets = ids[:, start:]
        on = policy(input_ids=ids, adapter_names=[adapter]).logits[:, start - 1:-1]
        off = policy(input_ids=ids, adapter_names=[BASE_ADAPTER]).logits[:, start - 1:-1]
        on, off = on / temperature, off / temperature
        total += (logprobs_from_logits(on, targets) - logprobs_from_logits(off, targets)
                  ).sum().item()
    return total / len(answers)


def _degenerate(ids: list[int], config: EvalConfig) -> bool:
    return len(ids) >= 8 and len(set(ids)) / len(ids) < config.degenerate_unique_ratio


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
