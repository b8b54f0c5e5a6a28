"""Two sides of a comparison benchmark (Flywheel and TRL), each run in a process of its own."""

import json
import subprocess
import sys


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
