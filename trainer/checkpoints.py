"""Training state on disk, never served: the PPO state each adapter's training ended with
(the next cycle's warm start) and the checkpoint a killed cycle resumes from.

    <data_dir>/training-state/policy-v3.pt    value head, optimizer moments, KL controller
    <data_dir>/checkpoints/cycle-12.pt         a running cycle's last checkpoint

Each is one file of tensors, lists and numbers (loaded with `weights_only=True`: no code
runs), written to a temporary file, fsynced and renamed over the old one, so a crash
leaves the last whole file and never half of one.
"""

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, get_peft_model_state_dict

from trainer.ppo import PPOState


def training_state_path(data_dir: Path, version: str) -> Path:
    return Path(data_dir) / "training-state" / f"{version}.pt"


def checkpoint_path(data_dir: Path, run_id: int) -> Path:
    return Path(data_dir) / "checkpoints" / f"cycle-{run_id}.pt"


def lora_weights(policy: PeftModel) -> dict[str, torch.Tensor]:
    """The trained adapter's LoRA tensors alone: peft would add the whole (frozen)
    embedding matrix beside an adapter of the LM head (GBs on a real model)."""
    return get_peft_model_state_dict(policy, save_embedding_layers=False)


def save_state(path: Path, state: PPOState, **extra: Any) -> None:
    """`state` and `extra` (tensors, lists, dicts, strings, numbers) to `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"ppo_state": asdict(state), **extra}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_state(path: Path) -> tuple[PPOState, dict[str, Any]] | None:
    """(the PPO state, the extras) saved at `path`, or None when there is none."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    return PPOState(**saved.pop("ppo_state")), saved
