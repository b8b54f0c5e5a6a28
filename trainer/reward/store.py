"""Where the loop keeps its reward models: immutable directories
`<data_dir>/reward_models/rm-0001`, `rm-0002`, … (a directory is named after its version,
never rewritten), and their entries in the registry (`feedback.queries.reward_models`),
which is the one record of which model is current.

`register_reward_model` is how a trained model joins, for the cycle and for `flywheel train
reward` alike: saved as the next version, compared with the current model on the held-out
pairs (a split by conversation that stays the same between versions), and registered
current if it is not worse, else rejected.

Stores made before the registry named the current directory in a `CURRENT` file there. The
first time such a store is asked for a reward model, its directories are imported into the
(empty) registry: the one `CURRENT` names becomes current, older ones retired, newer ones
rejected (they lost to it); the file is renamed `CURRENT.imported`.
"""

import contextlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from feedback.db import session_scope
from feedback.models import RewardModelStatus, RewardModelVersion
from feedback.queries import reward_models as registry
from trainer.data import Pair
from trainer.reward.model import CONFIG_FILE, RewardModel
from trainer.reward.train import HELDOUT_FIGURES, evaluate_reward_model

logger = logging.getLogger(__name__)

LEGACY_POINTER = "CURRENT"
_VERSION = re.compile(r"rm-(\d+)")


class Registration(NamedTuple):
    version: str  # the new model's
    path: Path  # the new model's directory
    in_use: Path  # the current model's directory now: `path` if kept, else the old one's
    kept: bool  # whether the new model became current
    heldout: dict[str, Any]  # the in-use model's figures on the validation pairs (NaN: None)


def reward_models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "reward_models"


def current_reward_model(engine: Engine, data_dir: Path) -> Path | None:
    """The directory of the reward model in use, or None before the first one (or when
    its files are gone)."""
    import_legacy_reward_models(engine, data_dir)
    with session_scope(engine) as session:
        current = registry.current_reward_model(session)
        return model_files(current, data_dir) if current else None


def model_files(row: RewardModelVersion, data_dir: Path) -> Path | None:
    """Where a registered model's files are: the path it was registered with, else its
    version's directory in this data directory (one moved or mounted elsewhere)."""
    for path in (Path(row.path), reward_models_dir(data_dir) / row.version):
        if (path / CONFIG_FILE).is_file():
            return path
    return None


def registered_version(engine: Engine, data_dir: Path, path: Path) -> str | None:
    """The version of the registered reward model whose files are at `path`, if any."""
    with session_scope(engine) as session:
        return next((row.version for row in registry.list_reward_models(session)
                     if (files := model_files(row, data_dir)) is not None
                     and files.resolve() == Path(path).resolve()), None)


def register_reward_model(engine: Engine, model: RewardModel, *, data_dir: Path,
                          validation_pairs: Sequence[Pair], data_window: dict[str, Any],
                          actor: str, models_dir: Path | None = None,
                          tolerance: float = 0.0) -> Registration:
    """Save `model` as the next version and register it: current (the current model
    retires) unless the current model's accuracy on `validation_pairs` beats it by more
    than `tolerance`, then rejected. With no current model, or no pairs to judge by, it
    becomes current. Its parent is the model that was current; `data_window` says what it
    trained on; `models_dir` is where a policy-LoRA model's base lives."""
    import_legacy_reward_models(engine, data_dir)
    with session_scope(engine) as session:
        current = registry.current_reward_model(session)
        taken = [row.version for row in registry.list_reward_models(session)]
        current_version = current.version if current else None
        current_path = model_files(current, data_dir) if current else None
    path = model.save(_reserve(reward_models_dir(data_dir), taken))
    figures = evaluate_reward_model(model, validation_pairs)
    kept, verdict = True, {}
    if current_path is not None and validation_pairs:
        theirs = evaluate_reward_model(RewardModel.load(current_path, models_dir=models_dir),
                                       validation_pairs)
        kept = figures["accuracy"] >= theirs["accuracy"] - tolerance
        verdict = {"compared_with": current_version, "accuracy": figures["accuracy"],
                   "current_accuracy": theirs["accuracy"], "pairs": len(validation_pairs),
                   "tolerance": tolerance}
        logger.info("held-out accuracy: %s %.4f, current %s %.4f (%d pairs)", path.name,
                    figures["accuracy"], current_version, theirs["accuracy"],
                    len(validation_pairs))
    elif current_version is not None:
        verdict = {"compared_with": None, "reason": "no held-out pairs" if current_path
                   else f"the files of {current_version} are gone"}
    with session_scope(engine) as session:
        registry.register_reward_model(
            session, version=path.name, path=str(path.resolve()), backbone=model.kind,
            actor=actor, status=RewardModelStatus.current if kept else RewardModelStatus.rejected,
            parent_version=current_version, data_window=data_window,
            heldout={k: figures[k] for k in HELDOUT_FIGURES}, detail=verdict)
    in_use = figures if kept else theirs
    return Registration(path.name, path, path if kept else current_path, kept,
                        registry.finite_figures({k: in_use[k] for k in HELDOUT_FIGURES}))


def _reserve(root: Path, taken: Sequence[str]) -> Path:
    """Make the next version's (empty) directory: one above every version registered or
    on disk, taken with `mkdir` so that two trainers never share one."""
    root.mkdir(parents=True, exist_ok=True)
    names = [*taken, *(p.name for p in root.iterdir())]
    number = max((int(m.group(1)) for name in names if (m := _VERSION.fullmatch(name))),
                 default=0) + 1
    while True:
        path = root / f"rm-{number:04d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1


def import_legacy_reward_models(engine: Engine, data_dir: Path) -> int:
    """Register the reward models of a store made before the registry: the directories
    beside its `CURRENT` file, which is then renamed `CURRENT.imported` (so this happens
    once). A registry that already holds reward models imports none. Returns how many were
    imported."""
    root = reward_models_dir(data_dir)
    try:
        pointer = (root / LEGACY_POINTER).read_text().strip()
    except FileNotFoundError:
        return 0
    found = sorted((int(m.group(1)), path) for path in root.glob("rm-*")
                   if (m := _VERSION.fullmatch(path.name)) and (path / CONFIG_FILE).is_file())
    current = next((number for number, path in found if path.name == pointer), None)
    imported = 0
    try:
        with session_scope(engine) as session:
            if not registry.list_reward_models(session):
                for number, path in found:
                    _import(session, path, RewardModelStatus.current if number == current
                            else RewardModelStatus.retired if current is None or number < current
                            else RewardModelStatus.rejected)
                imported = len(found)
    except IntegrityError:  # another process imported them at the same moment
        return 0
    with contextlib.suppress(FileNotFoundError):  # the other process renamed it
        (root / LEGACY_POINTER).rename(root / f"{LEGACY_POINTER}.imported")
    if imported:
        logger.info("imported %d reward models from %s into the registry", imported, root)
    else:
        logger.warning("ignored %s: the registry already holds reward models", root)
    return imported


def _import(session, path: Path, status: RewardModelStatus) -> None:
    config = json.loads((path / CONFIG_FILE).read_text())
    heldout = config.get("metrics", {}).get("heldout")
    registry.register_reward_model(
        session, version=path.name, path=str(path.resolve()), backbone=config["backbone"],
        actor="import", status=status,
        heldout={k: heldout[k] for k in HELDOUT_FIGURES if k in heldout} if heldout else None,
        detail={"imported_from": str(path.parent / LEGACY_POINTER)})
