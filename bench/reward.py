"""Reward-model benchmark: Flywheel's recipe against TRL's RewardTrainer on the same
backbone (the packaged MiniLM), data, split, epochs and max_length. Prints one JSON line.

    python bench/reward.py [--data ../shared/data/hh_harmless_dev.jsonl.gz] [--epochs 1]

The split is fixed (`pairs_from_file`, 20 % of prompts held out, seed 0). Both trainers
see the same text (the conversation as `Role: text` lines, left-truncated to max_length
tokens): TRL gets it pre-tokenized, so it filters nothing out. Figures:

  accuracy            held-out pairwise accuracy
  train_pairs_per_s   training pairs × epochs / training wall time
  gain_points         100 · (flywheel accuracy − TRL accuracy)          (target >= 3)
  speedup             flywheel train_pairs_per_s / TRL's                 (target >= 1.5)
  cpu_speedup         TRL's training CPU seconds / flywheel's (steadier on a shared machine)
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.data import Pair, pairs_from_file  # noqa: E402
from trainer.reward import RewardConfig, train_reward_model  # noqa: E402
from trainer.reward.model import minilm_dir, plain_text  # noqa: E402
from trainer.rlhf.reward_losses import pairwise_accuracy  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"


def tokenized(tokenizer, pairs: list[Pair], max_length: int) -> dict[str, list]:
    def ids(answers: list[str]) -> list[list[int]]:
        texts = [plain_text([*p.prompt, {"role": "assistant", "content": a}])
                 for p, a in zip(pairs, answers, strict=True)]
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]

    return {"chosen_ids": ids([p.chosen for p in pairs]),
            "rejected_ids": ids([p.rejected for p in pairs])}


def run_trl(train: list[Pair], heldout: list[Pair], *, epochs: int, max_length: int,
            seed: int) -> dict:
    """TRL's RewardTrainer with its defaults (lr 1e-4, batch 8, no dropout), except bf16
    and gradient checkpointing, which only slow a CPU down."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig as TRLConfig
    from trl import RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    tokenizer.truncation_side = "left"
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=1,
                                                               local_files_only=True)
    with tempfile.TemporaryDirectory() as out:
        args = TRLConfig(output_dir=out, num_train_epochs=epochs, max_length=max_length,
                         bf16=False, gradient_checkpointing=False, report_to=[],
                         save_strategy="no", logging_steps=50, seed=seed,
                         dataloader_num_workers=0, disable_tqdm=True)
        trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer,
                                train_dataset=Dataset.from_dict(
                                    tokenized(tokenizer, train, max_length)))
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    held = tokenized(tokenizer, heldout, max_length)
    rewards = {}
    with torch.inference_mode():
        for side in ("chosen_ids", "rejected_ids"):
            out = []
            for i in range(0, len(heldout), 64):
                batch = tokenizer.pad({"input_ids": held[side][i:i + 64]}, return_tensors="pt")
                batch = {k: v.to(model.device) for k, v in batch.items()}
                out.append(model(**batch).logits.squeeze(-1).float().cpu())
            rewards[side] = torch.cat(out)
    accuracy = float(pairwise_accuracy(rewards["chosen_ids"], rewards["rejected_ids"]))
    return {"accuracy": round(accuracy, 4), "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1),
            "train_pairs_per_s": round(len(train) * epochs / seconds, 2)}


def run_flywheel(train: list[Pair], heldout: list[Pair], *, epochs: int, max_length: int,
                 seed: int) -> dict:
    config = RewardConfig(epochs=epochs, max_length=max_length, seed=seed)
    _, metrics = train_reward_model(train, heldout, config)
    return {"accuracy": round(metrics["accuracy"], 4), "loss": round(metrics["loss"], 4),
            "ece": round(metrics["ece"], 4), "train_seconds": metrics["train_seconds"],
            "train_cpu_seconds": metrics["train_cpu_seconds"],
            "train_pairs_per_s": metrics["train_pairs_per_s"],
            "recipe": {k: getattr(config, k) for k in ("lr", "batch_size", "warmup_ratio",
                                                       "center_coef", "frozen_layers")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--heldout-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-trl", action="store_true", help="Only Flywheel's recipe.")
    args = parser.parse_args()

    split = pairs_from_file(args.data, heldout_fraction=args.heldout_fraction, seed=0)
    common = {"epochs": args.epochs, "max_length": args.max_length, "seed": args.seed}
    figures = {"data": args.data.name, "train_pairs": len(split.train),
               "heldout_pairs": len(split.heldout), **common,
               "threads": torch.get_num_threads()}
    figures["flywheel"] = run_flywheel(split.train, split.heldout, **common)
    if not args.skip_trl:
        figures["trl"] = trl = run_trl(split.train, split.heldout, **common)
        ours = figures["flywheel"]
        figures["gain_points"] = round(100 * (ours["accuracy"] - trl["accuracy"]), 1)
        figures["speedup"] = round(ours["train_pairs_per_s"] / trl["train_pairs_per_s"], 2)
        # The machine is shared: CPU time is the steadier measure of the work done.
        figures["cpu_speedup"] = round(trl["train_cpu_seconds"] / ours["train_cpu_seconds"], 2)
        figures["targets_met"] = (ours["accuracy"] >= 0.64 and figures["gain_points"] >= 3
                                  and figures["speedup"] >= 1.5)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
