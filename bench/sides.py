"""Two sides of a comparison benchmark (Flywheel and TRL), each run in a process of its own:
the options both take, the dispatch to one side, and the comparison of their fastest rounds."""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from flywheel.model_loading import load_model

Side = Callable[[argparse.Namespace, object], dict]  # (options, the loaded model) -> figures


def side_parser(description: str, *, steps: int, batch: int) -> argparse.ArgumentParser:
    """The options every comparison takes; a script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir())
                        / "flywheel-bench-models")
    parser.add_argument("--side", choices=["flywheel", "trl"], help=argparse.SUPPRESS)
    return parser


def compare(script: str, args: argparse.Namespace, *, flywheel: Side, trl: Side, rate: str,
            figures: dict) -> None:
    """With `--side`, run that side once on a freshly loaded model and print its figures;
    else print `figures` with both sides' fastest rounds (`fastest_of_rounds`)."""
    if args.side:
        torch.manual_seed(0)
        loaded = load_model(args.model, models_dir=args.models_dir)
        print(json.dumps((flywheel if args.side == "flywheel" else trl)(args, loaded)))
        return
    figures = {"model": args.model, "steps": args.steps, "batch": args.batch,
               "lora_r": args.lora_r, **figures, "device": "cuda" if torch.cuda.is_available()
               else f"cpu ({torch.get_num_threads()} threads)"}
    figures.update(fastest_of_rounds(script, args.rounds, rate))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                      for k, v in figures.items()}))


def peak_mb() -> float:
    """Peak resident memory (peak CUDA memory on a GPU), in MiB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fastest_of_rounds(script: str, rounds: int, rate: str) -> dict:
    """Run `script … --side flywheel` and `--side trl` in turn for `rounds` rounds, each in a
    fresh process whose last stdout line is its JSON figures, and keep each side's fastest
    run by `<side>_<rate>` (the least disturbed by other work on the machine). Returns both
    sides' figures and `speedup` (Flywheel's rate over TRL's)."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for side in ("flywheel", "trl"):
            out = subprocess.run([sys.executable, script, *sys.argv[1:], "--side", side],
                                 check=True, capture_output=True, text=True).stdout
            run = json.loads(out.strip().splitlines()[-1])
            if side not in best or run[f"{side}_{rate}"] > best[side][f"{side}_{rate}"]:
                best[side] = run
    figures = {**best["flywheel"], **best["trl"]}
    figures["speedup"] = figures[f"flywheel_{rate}"] / figures[f"trl_{rate}"]
    return figures
