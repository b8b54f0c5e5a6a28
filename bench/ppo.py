"""PPO benchmark: Flywheel's PPO against a TRL on-policy trainer on the same tiny model, LoRA
rank, batch and lengths. Prints one JSON line of figures.

    python bench/ppo.py [--model demo] [--steps 4] [--batch 16] [--new-tokens 32] [--lora-r 16]
                        [--rounds 2]

TRL 1.16 (this environment) no longer ships its PPO trainer and no TRL with
`trl.experimental.ppo` can be installed offline here, so the comparison is TRL's RLOOTrainer
(8 prompts x 2 answers, so the same 16 answers per step; β = 0.05 with the reference taken with
the adapter off, one pass per batch). Flywheel's side runs PPO with one epoch and one minibatch
per step, so both do one rollout and one update over the same answers. Both score with the same
cheap reward function, so the comparison is of the training machinery. Each side runs in its own
process after one warm-up step; the sides alternate for `--rounds` rounds and each keeps its
fastest round (the least disturbed by other work on the machine).

Figures:
  flywheel_samples_per_s, trl_samples_per_s   answers trained on per second
  speedup                                     flywheel / trl                (target >= 1.5)
  flywheel_generation_s, _scoring_s, _update_s   per step: sampling; reward + log-probs +
                                              reference + values; the PPO update
  trl_generation_s, trl_other_s               per step: inside `generate`; everything else
  flywheel_peak_mb, trl_peak_mb               peak resident memory (peak CUDA memory on a GPU)
"""

import tempfile
import time

import torch
from sides import compare, peak_mb, side_parser

from flywheel.model_loading import lora_config

TOPICS = ("lighthouses", "gardens", "trains", "rivers", "music", "bread", "winter", "maps")


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Tell me something about {TOPICS[i % len(TOPICS)]}, "
              f"please ({i})."}] for i in range(n)]


def reward(completions: list[str]) -> list[float]:
    """A cheap stand-in for a reward model: shorter words score higher."""
    return [-sum(map(len, c.split())) / max(1, len(c.split())) for c in completions]


def run_flywheel(args, loaded) -> dict:
    from trainer.ppo import PPOConfig, prepare_policy, train_ppo

    config = PPOConfig(steps=1, batch_size=args.batch, minibatch_size=args.batch, ppo_epochs=1,
                       max_new_tokens=args.new_tokens, lora_r=args.lora_r,
                       lora_alpha=2 * args.lora_r, kl_cap=float("inf"), seed=0)
    policy = prepare_policy(loaded.model, config)
    data = prompts(64)

    def score(_, completions):
        return torch.tensor(reward(completions))

    train_ppo(policy, loaded.tokenizer, data, score, config)  # warm-up
    config.steps = args.steps
    started = time.perf_counter()
    result = train_ppo(policy, loaded.tokenizer, data, score, config)
    elapsed = time.perf_counter() - started
    per_step = {f"flywheel_{k}_s": v / args.steps for k, v in result.timings.items()}
    return {"flywheel_samples_per_s": args.batch * args.steps / elapsed, **per_step,
            "flywheel_peak_mb": peak_mb()}


def run_trl(args, loaded) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    model, generate_time = loaded.model, [0.0]
    original_generate = model.generate

    def timed_generate(*a, **kw):
        started = time.perf_counter()
        try:
            return original_generate(*a, **kw)
        finally:
            generate_time[0] += time.perf_counter() - started

    model.generate = timed_generate
    marks: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            marks.append((time.perf_counter(), generate_time[0]))

    def score(prompts, completions, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return reward(texts)

    with tempfile.TemporaryDirectory() as out:
        config = RLOOConfig(
            output_dir=out, per_device_train_batch_size=args.batch, num_generations=2,
            steps_per_generation=1, num_iterations=1, max_completion_length=args.new_tokens,
            max_steps=args.steps + 1, learning_rate=1e-4, beta=0.05, logging_steps=1,
            report_to=[], save_strategy="no", use_cpu=not torch.cuda.is_available(),
            bf16=loaded.dtype == torch.bfloat16, disable_dropout=True, seed=0)
        trainer = RLOOTrainer(
            model=model, reward_funcs=score, args=config,
            train_dataset=Dataset.from_list([{"prompt": p} for p in prompts(64)]),
            processing_class=loaded.tokenizer, callbacks=[Clock()],
            peft_config=lora_config(model, r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0))
        trainer.train()
    (t0, g0), (t1, g1) = marks[0], marks[-1]  # from the end of the warm-up step
    steps = len(marks) - 1
    return {"trl_samples_per_s": args.batch * steps / (t1 - t0),
            "trl_generation_s": (g1 - g0) / steps, "trl_other_s": (t1 - t0 - g1 + g0) / steps,
            "trl_peak_mb": peak_mb()}


def main() -> None:
    parser = side_parser(__doc__.splitlines()[0], steps=4, batch=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    compare(__file__, args, flywheel=run_flywheel, trl=run_trl, rate="samples_per_s",
            figures={"new_tokens": args.new_tokens, "trl_trainer": "RLOOTrainer"})


if __name__ == "__main__":
    main()
