"""Where the loop keeps its reward models: `<data_dir>/reward_models/rm-0001`, `rm-0002`, …
(immutable versions, never rewritten) and a `CURRENT` file naming the one in use.

A retrained model replaces the current one only if it is not worse on a fixed
validation set (the held-out conversations, which stay held out between retrains).
"""

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from trainer.data import Pair
from trainer.reward.model import RewardModel
from trainer.reward.train import evaluate_reward_model

logger = logging.getLogger(__name__)

POINTER = "CURRENT"
_VERSION = re.compile(r"rm-(\d+)")


def reward_models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "reward_models"


def new_version_dir(root: Path) -> Path:
    """The directory for the next version (`rm-NNNN`, one above the highest so far)."""
    root = Path(root)
    taken = [int(m.group(1)) for p in root.glob("rm-*") if (m := _VERSION.fullmatch(p.name))]
    return root / f"rm-{max(taken, default=0) + 1:04d}"


def current_reward_model(root: Path) -> Path | None:
    """The reward model in use, or None before the first one."""
    try:
        name = (Path(root) / POINTER).read_text().strip()
    except FileNotFoundError:
        return None
    path = Path(root) / name
    return path if name and path.is_dir() else None


def set_current(root: Path, version_dir: Path) -> None:
    """Point `CURRENT` at `version_dir` (a directory inside `root`), atomically."""
    root = Path(root)
    temp = root / f".{POINTER}.{os.getpid()}.tmp"
    temp.write_text(Path(version_dir).name + "\n")
    os.replace(temp, root / POINTER)


def promote_if_not_worse(candidate_dir: Path, current_dir: Path | None,
                         validation_pairs: Sequence[Pair], *,
                         tolerance: float = 0.0) -> bool:
    """Make the candidate current (in its parent's `CURRENT`) unless the current model's
    accuracy on `validation_pairs` beats it by more than `tolerance`. With no current
    model, or no validation pairs to judge by, the candidate wins."""
    candidate_dir = Path(candidate_dir)
    if current_dir is not None and validation_pairs:
        candidate = evaluate_reward_model(RewardModel.load(candidate_dir), validation_pairs)
        current = evaluate_reward_model(RewardModel.load(current_dir), validation_pairs)
        logger.info("validation accuracy: candidate %.4f, current %.4f (%d pairs)",
                    candidate["accuracy"], current["accuracy"], len(validation_pairs))
        if candidate["accuracy"] < current["accuracy"] - tolerance:
            return False
    set_current(candidate_dir.parent, candidate_dir)
    return True
