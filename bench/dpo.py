"""DPO benchmark: Flywheel's `train_dpo` against TRL's `DPOTrainer` on the same tiny model,
LoRA, pairs and batch. Prints one JSON line of figures.

    python bench/dpo.py [--model demo] [--steps 8] [--batch 8] [--lora-r 16] [--rounds 2]

Both sides train a fresh LoRA adapter (every linear layer, rank `--lora-r`, no dropout) with
sigmoid DPO, β = 0.1 and the reference taken with the adapter off, on the same conversational
pairs (chat-templated by each side), `--batch` pairs per step. TRL runs with its defaults
(the reference's forward pass in every step) except gradient checkpointing and bf16, which
only slow a CPU down. Flywheel's figure is the whole `train_dpo` call: encoding the pairs, the
reference's log-probs computed once up front, and the steps; TRL's is step to step after its
first (dataset preparation and setup left out), so the comparison is conservative for
Flywheel. Each side runs in its own process after a warm-up; the sides alternate for
`--rounds` rounds and each keeps its fastest round (the least disturbed by other work).

Figures:
  flywheel_pairs_per_s, trl_pairs_per_s   pairs trained on per second
  speedup                                 flywheel / trl                     (target >= 1.5)
  flywheel_reference_s, flywheel_update_s per step: the up-front reference pass (spread over
                                          the steps, encoding included); the update
  flywheel_peak_mb, trl_peak_mb           peak resident memory (peak CUDA memory on a GPU)
"""

import tempfile
import time

import torch
from sides import compare, peak_mb, side_parser

from flywheel.model_loading import lora_config

TOPICS = ("lighthouses", "gardens", "trains", "rivers", "music", "bread", "winter", "maps")
KIND = "Of course! {} are wonderful, and I am glad you asked. Here is what I know about them."
CURT = "{} are not worth talking about. Ask something else."


def pairs(n: int) -> list[dict]:
    """`n` conversational preference rows: a kind answer over a curt one."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({"prompt": [{"role": "user", "content": f"Tell me something about {topic}, "
                                 f"please ({i})."}],
                     "chosen": [{"role": "assistant", "content": KIND.format(topic.title())}],
                     "rejected": [{"role": "assistant", "content": CURT.format(topic.title())}]})
    return rows


def run_flywheel(args, loaded) -> dict:
    from trainer.data import Pair
    from trainer.dpo import DPOConfig, train_dpo
    from trainer.ppo import PPOConfig, prepare_policy

    policy = prepare_policy(loaded.model, PPOConfig(lora_r=args.lora_r,
                                                    lora_alpha=2 * args.lora_r, seed=0))
    data = [Pair(row["prompt"], row["chosen"][0]["content"], row["rejected"][0]["content"])
            for row in pairs(args.batch * args.steps)]
    config = DPOConfig(beta=0.1, learning_rate=1e-4, batch_size=args.batch, epochs=1,
                       max_length=1024, seed=0)
    train_dpo(policy, loaded.tokenizer, data[:args.batch], config)  # warm-up
    started = time.perf_counter()
    result = train_dpo(policy, loaded.tokenizer, data, config)
    elapsed = time.perf_counter() - started
    steps = len(result.metrics)
    return {"flywheel_pairs_per_s": len(data) / elapsed,
            "flywheel_reference_s": (elapsed - result.timings["update"]) / steps,
            "flywheel_update_s": result.timings["update"] / steps,
            "flywheel_peak_mb": peak_mb()}


def run_trl(args, loaded) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.steps + 1,
            learning_rate=1e-4, beta=0.1, max_length=1024, logging_steps=1, report_to=[],
            save_strategy="no", use_cpu=not torch.cuda.is_available(),
            bf16=loaded.dtype == torch.bfloat16, gradient_checkpointing=False,
            disable_dropout=True, seed=0)
        trainer = DPOTrainer(
            model=loaded.model, args=config,
            train_dataset=Dataset.from_list(pairs(args.batch * (args.steps + 1))),
            processing_class=loaded.tokenizer, callbacks=[Clock()],
            peft_config=lora_config(loaded.model, r=args.lora_r, alpha=2 * args.lora_r,
                                    dropout=0.0))
        trainer.train()
    steps = len(marks) - 1  # from the end of the warm-up step
    return {"trl_pairs_per_s": args.batch * steps / (marks[-1] - marks[0]),
            "trl_step_s": (marks[-1] - marks[0]) / steps, "trl_peak_mb": peak_mb()}


def main() -> None:
    args = side_parser(__doc__.splitlines()[0], steps=8, batch=8).parse_args()
    compare(__file__, args, flywheel=run_flywheel, trl=run_trl, rate="pairs_per_s", figures={})


if __name__ == "__main__":
    main()
