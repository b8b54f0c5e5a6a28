"""Reproduce a past training cycle from a flywheel log: the same data, the same recipe and
the same seed give the same metrics (exactly, on CPU).

1. The run: the cycle run asked for, else the log's last cycle that succeeded (its final
   state: configuration, data window, metrics).
2. The store as it was at the end of the run's window (`until`): the log replayed into a
   temporary SQLite store up to that time (`feedback.replay`), so feedback that came later
   does not leak in.
3. A temporary data directory: the configured models directory (the same base weights);
   the adapter the run started from (the parent of the candidate it made; for a run that
   made none, the adapter live at `until`), copied from the configured adapter store with
   the training state PPO continues from, and made the live one, else none is live and the
   cycle starts from the base model; the reward model that was current then
   (`reward.previous_version`), copied from where the registry says it is (else from the
   configured data directory) and made the current one of the rebuilt registry, else none
   is current.
4. The cycle, forced, with the logged configuration; `seed` replaces its seeds (the
   cycle's, and those of its reward model, PPO and evaluation).
5. Every figure compared, except those that measure the machine rather than the training
   (`timings`, `*_seconds`, `*_per_s`) and the names given to what it made (the reward
   model's and the candidate's versions).
"""

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update

from feedback.db import open_store, session_scope
from feedback.errors import NotFound
from feedback.formats import FormatError, Progress, iter_lines, parse_json
from feedback.logformat import from_log, is_log_header
from feedback.models import Adapter, AdapterStatus, RewardModelStatus, RewardModelVersion
from feedback.queries.adapters import live_adapter
from feedback.queries.reward_models import get_reward_model, register_reward_model
from feedback.replay import replay_log
from flywheel.errors import FlywheelError
from flywheel.settings import Settings
from trainer.checkpoints import training_state_path
from trainer.cycle import CycleConfig, run_cycle
from trainer.evaluate import EvalConfig
from trainer.ppo import PPOConfig
from trainer.reward import RewardConfig, model_files, reward_models_dir
from trainer.reward.model import CONFIG_FILE

NAMES = {"reward.version", "eval.candidate"}  # what the run named, not what it measured


@dataclass
class Reproduction:
    run_id: int
    seed: int
    status: str  # the reproduced cycle's: succeeded or failed
    logged: dict[str, Any]  # figure path -> value
    reproduced: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what could not be as it was

    @property
    def differences(self) -> list[str]:
        return [path for path in sorted(self.logged.keys() | self.reproduced.keys())
                if not _same(self.logged.get(path), self.reproduced.get(path))]

    @property
    def matches(self) -> bool:
        return not self.differences


def reproduce_cycle(settings: Settings, log_path: str | Path, *, run_id: int | None = None,
                    seed: int | None = None,
                    on_progress: Progress | None = None) -> Reproduction:
    """Run the logged cycle `run_id` (default: the last that succeeded) again, as it was."""
    runs, adapters = _final_states(Path(log_path))
    run = _pick_run(runs, run_id)
    until = datetime.fromisoformat(run["data_window"]["until"])
    config, notes = _cycle_config(run["config"], seed)
    made = adapters.get(run.get("adapter_version"))
    with tempfile.TemporaryDirectory(prefix="flywheel-reproduce-") as temp:
        data_dir = Path(temp)
        local = settings.model_copy(update={"data_dir": data_dir, "db": None,
                                            "event_log": "off", "auto_promote": False})
        engine = open_store(local.db_url)
        try:
            replay_log(engine, log_path, until=until, skip=[("training_run", run["id"])],
                       on_progress=on_progress)
            if settings.models_dir.is_dir():
                (data_dir / "models").symlink_to(settings.models_dir.resolve())
            parent = made["parent_version"] if made else _live_at_until(engine)
            notes += _warm_start(engine, settings, local, parent)
            notes += _current_reward_model(engine, settings, local, run["metrics"])
            if made and made["base_model"] != settings.model:
                notes.append(f"the run trained on {made['base_model']!r}; this one on "
                             f"{settings.model!r}")
            result = run_cycle(local, engine, config, force=True)
        finally:
            engine.dispose()
    reproduced = json.loads(json.dumps(result.metrics))
    if result.status != "succeeded":
        notes.append(f"the reproduced cycle {result.status}: {result.reason}")
    return Reproduction(run["id"], config.seed, result.status, _figures(run["metrics"]),
                        _figures(reproduced), notes)


def _final_states(path: Path) -> tuple[dict[int, dict], dict[str, dict]]:
    """The last state of each training run (by id) and adapter (by version) in the log."""
    runs: dict[int, dict] = {}
    adapters: dict[str, dict] = {}
    for index, (number, raw) in enumerate(iter_lines(path)):
        try:
            obj = parse_json(raw, first=number == 1)
            if index == 0:
                if not is_log_header(obj):
                    raise FormatError("not a flywheel log: the first line must be its header")
                continue
            record = from_log(obj)
        except FormatError as e:
            raise e.at(path, number) from None
        if record.kind == "training_run" and record.row is not None:
            runs[record.key] = {**record.row, "id": record.key}
        elif record.kind == "adapter" and record.row is not None:
            adapters[record.row["version"]] = record.row
    return runs, adapters


def _pick_run(runs: dict[int, dict], run_id: int | None) -> dict:
    cycles = {i: r for i, r in runs.items() if r["kind"] == "cycle"}
    if run_id is not None:
        if run_id not in cycles:
            raise FlywheelError(f"the log holds no cycle run {run_id} (it holds "
                                f"{', '.join(map(str, sorted(cycles))) or 'none'})")
        return cycles[run_id]
    done = [i for i, r in cycles.items() if r["status"] == "succeeded"]
    if not done:
        raise FlywheelError("the log holds no cycle that succeeded: name one with --run, or "
                            "replay a log written while cycles ran")
    return cycles[max(done)]


def _cycle_config(logged: dict[str, Any], seed: int | None) -> tuple[CycleConfig, list[str]]:
    """The logged configuration as a CycleConfig; `seed` replaces every seed in it."""
    notes: list[str] = []
    sections = {"reward": RewardConfig, "ppo": PPOConfig, "eval": EvalConfig}
    built: dict[str, Any] = {}
    for name, value in logged.items():
        if name in sections:
            built[name] = _dataclass(sections[name], value, name, notes)
        elif name in {f.name for f in fields(CycleConfig)}:
            built[name] = value
        else:
            notes.append(f"the logged configuration's {name!r} is not known here; ignored")
    config = CycleConfig(**built)
    if seed is not None:
        config = replace(config, seed=seed, reward=replace(config.reward, seed=seed),
                         ppo=replace(config.ppo, seed=seed), eval=replace(config.eval, seed=seed))
    return config, notes


def _dataclass(cls: type, values: dict[str, Any], section: str, notes: list[str]) -> Any:
    known = {f.name for f in fields(cls)}
    for name in values.keys() - known:
        notes.append(f"the logged configuration's {section}.{name} is not known here; ignored")
    kept = {k: v for k, v in values.items() if k in known}
    if kept.get("models_dir"):
        kept["models_dir"] = Path(kept["models_dir"])
    return cls(**kept)


def _live_at_until(engine) -> str | None:
    with session_scope(engine) as session:
        live = live_adapter(session)
        return live.version if live else None


def _warm_start(engine, settings: Settings, local: Settings, parent: str | None) -> list[str]:
    """Make `parent` the live adapter of the rebuilt store, its files (and the training
    state PPO continues from) copied over; or, if they are not in the configured adapter
    store, no adapter live (the base model)."""
    source = settings.adapters_dir / parent if parent else None
    present = source is not None and source.is_dir()
    if present:
        shutil.copytree(source, local.adapters_dir / parent)
        state = training_state_path(settings.data_dir, parent)
        if state.is_file():
            training_state_path(local.data_dir, parent).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(state, training_state_path(local.data_dir, parent))
    with session_scope(engine) as session:
        session.exec(update(Adapter).where(Adapter.status == AdapterStatus.live)
                     .values(status=AdapterStatus.retired))
        if present:
            session.exec(update(Adapter).where(Adapter.version == parent)
                         .values(status=AdapterStatus.live))
    if parent and not present:
        return [f"the run warm-started from adapter {parent}, which is not in "
                f"{settings.adapters_dir}: this one starts from the base model"]
    return []


def _current_reward_model(engine, settings: Settings, local: Settings,
                          metrics: dict) -> list[str]:
    """Make `previous`, the reward model current when the run began, the current one of
    the rebuilt registry (registered there if the log lacks it), its files copied over;
    or, if they are gone, none current."""
    previous = metrics.get("reward", {}).get("previous_version")
    with session_scope(engine) as session:
        session.exec(update(RewardModelVersion)
                     .where(RewardModelVersion.status == RewardModelStatus.current)
                     .values(status=RewardModelStatus.retired))
    if previous is None:
        return []
    try:
        with session_scope(engine) as session:
            source = model_files(get_reward_model(session, version=previous),
                                 settings.data_dir)
            registered = True
    except NotFound:  # an export holds a row's last state only, which may be after `until`
        source, registered = reward_models_dir(settings.data_dir) / previous, False
    if source is None or not (source / CONFIG_FILE).is_file():
        return [f"reward model {previous}, current when the run began, is not in "
                f"{reward_models_dir(settings.data_dir)}: the new one is kept whatever it "
                "scores"]
    target = reward_models_dir(local.data_dir) / previous
    shutil.copytree(source, target)
    with session_scope(engine) as session:
        if registered:
            session.exec(update(RewardModelVersion)
                         .where(RewardModelVersion.version == previous)
                         .values(path=str(target), status=RewardModelStatus.current))
        else:
            backbone = json.loads((target / CONFIG_FILE).read_text())["backbone"]
            register_reward_model(session, version=previous, path=str(target),
                                  backbone=backbone, actor="reproduce")
    return []


def _figures(metrics: Any, prefix: str = "") -> dict[str, Any]:
    """Every figure by its path (`reward.accuracy`, `ppo.steps[0].kl`), but timings and
    names."""
    if isinstance(metrics, dict):
        out: dict[str, Any] = {}
        for key, value in metrics.items():
            path = f"{prefix}.{key}" if prefix else key
            if key == "timings" or key.endswith(("_seconds", "_per_s")) or path in NAMES:
                continue
            out.update(_figures(value, path))
        return out
    if isinstance(metrics, list):
        out = {}
        for i, value in enumerate(metrics):
            out.update(_figures(value, f"{prefix}[{i}]"))
        return out
    return {prefix: metrics}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
