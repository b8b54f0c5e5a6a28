"""One training cycle, top to bottom: feedback → reward model → PPO → evaluation →
a candidate adapter for an operator to judge.

Only one cycle runs at a time across every process and machine: the cycle holds the
"cycle" lease in the database and renews it while it works. A worker that dies mid-cycle
stops renewing; the next cycle takes the lease over and resumes the dead run from its last
PPO checkpoint (the same data, reward model and draws: it ends with the adapter the run
would have made), or marks it failed when it died before its first checkpoint. Nothing
half-made becomes visible: the reward model, checkpoints and the adapter are written
atomically, and the adapter is registered only once it is stored and evaluated.

Cycles build on each other: the reward model starts from the current one and sees all
feedback to date, and PPO starts from the live adapter with the critic, optimizer moments
and KL controller its training ended with.
"""

import json
import logging
import math
import os
import socket
import threading
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from peft import set_peft_model_state_dict
from sqlalchemy import Engine

from feedback.db import session_scope
from feedback.models import RunKind, RunStatus, utcnow
from feedback.queries import adapters as registry
from feedback.queries import runs
from feedback.queries.activity import feedback_counts
from feedback.queries.leases import acquire_lease, release_lease
from flywheel.adapter_store import AdapterStore
from flywheel.errors import FlywheelError
from flywheel.model_loading import load_model
from flywheel.settings import Settings
from trainer.annotators import record_annotator_quality
from trainer.checkpoints import (
    checkpoint_path,
    load_state,
    lora_weights,
    save_state,
    training_state_path,
)
from trainer.configs import DEFAULT_PROMPT_LIMIT
from trainer.data import preference_pairs, user_prompts
from trainer.demonstrations import demonstrations
from trainer.dpo import DPOConfig
from trainer.evaluate import EvalConfig, evaluate_candidate, render_markdown
from trainer.parallel_stages import train_policy_on, train_reward_model_on
from trainer.policy_stage import METHODS, PolicyRecipe, register_policy_adapter, train_policy
from trainer.ppo import PPOConfig, PPOState, prepare_policy
from trainer.reward import (
    RewardConfig,
    RewardModel,
    current_reward_model,
    register_reward_model,
)
from trainer.sft import SFTConfig

log = logging.getLogger(__name__)
LEASE = "cycle"


@dataclass
class CycleConfig:
    min_new_feedback: int = 50  # votes since the last cycle before a new one is worth it
    min_pairs: int = 20  # preference pairs the reward model needs at the least
    prompt_limit: int = DEFAULT_PROMPT_LIMIT  # user turns PPO may train on
    eval_share: float = 0.2  # of those, held out for the candidate's evaluation
    lease_ttl_s: float = 120.0  # a cycle whose worker stops renewing for this long is dead
    seed: int = 0
    method: str = "ppo"  # how the policy learns: "ppo", "dpo" or "online_dpo"
    min_demonstrations: int = 20  # rewrites before a cycle starts with SFT on them
    processes: int = 1  # data-parallel training processes (torchrun) for the RM and policy
    reward: RewardConfig = field(default_factory=RewardConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)  # for "dpo" and "online_dpo"
    eval: EvalConfig = field(default_factory=EvalConfig)

    def policy_recipe(self) -> PolicyRecipe:
        return PolicyRecipe(self.method, self.min_demonstrations, self.sft, self.ppo, self.dpo)


def cycle_config_from(settings: Settings) -> CycleConfig:
    """The cycle's recipe: the defaults, overridden by `settings.cycle_config` (a JSON file
    of sections: top-level fields, "reward", "sft", "ppo", "dpo", "eval"), with clear
    errors."""
    config = CycleConfig(min_new_feedback=settings.cycle_min_feedback)
    if settings.cycle_config is None:
        return config
    path = settings.cycle_config
    try:
        overrides = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FlywheelError(f"cycle config {path}: {e}") from None
    if not isinstance(overrides, dict):
        raise FlywheelError(f"cycle config {path}: expected a JSON object")
    sections = {"reward": config.reward, "sft": config.sft, "ppo": config.ppo,
                "dpo": config.dpo, "eval": config.eval}
    try:
        for name, value in overrides.items():
            if name in sections:
                if not isinstance(value, dict):
                    raise ValueError(f"'{name}' must be an object")
                sections[name] = replace(sections[name], **value)
            else:
                config = replace(config, **{name: value})
    except (TypeError, ValueError) as e:  # an unknown field, a section not an object
        raise FlywheelError(f"cycle config {path}: {e}") from None
    if config.method not in METHODS:
        raise FlywheelError(f"cycle config {path}: unknown method {config.method!r} "
                            f"(expected one of {', '.join(METHODS)})")
    if not isinstance(config.processes, int) or config.processes < 1:
        raise FlywheelError(f"cycle config {path}: processes must be a whole number ≥ 1")
    if config.processes > 1 and config.method == "online_dpo":
        raise FlywheelError(f"cycle config {path}: online_dpo runs on one process")
    return replace(config, **sections)


@dataclass
class CycleResult:
    status: str  # "succeeded", "skipped" or "failed"
    reason: str = ""
    run_id: int | None = None
    adapter_version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def run_cycle(settings: Settings, engine: Engine, config: CycleConfig | None = None, *,
              force: bool = False) -> CycleResult:
    """Run one cycle now, unless another is running or (without `force`) too little new
    feedback has arrived."""
    config = config or CycleConfig()
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with session_scope(engine) as session:
        if not acquire_lease(session, name=LEASE, holder=holder, ttl_s=config.lease_ttl_s):
            return CycleResult("skipped", "another cycle is running")
    heartbeat = _Heartbeat(engine, holder, config.lease_ttl_s)
    try:
        with session_scope(engine) as session:
            resumable = _take_over_abandoned_runs(session, settings)
        if resumable is not None:
            log.info("resuming cycle %d from its checkpoint", resumable)
            return _run(settings, engine, config, resumable)
        with session_scope(engine) as session:
            since = _last_cycle_end(session)
            counts = feedback_counts(session, since=since)
            new = sum(counts.values())
            if new < config.min_new_feedback and not force:
                return CycleResult("skipped", f"{new} new votes since the last cycle; "
                                   f"waiting for {config.min_new_feedback}")
            run_id = runs.start_run(
                session, kind=RunKind.cycle, config=_jsonable(asdict(config)),
                data_window={"since": since.isoformat() if since else None,
                             "until": utcnow().isoformat(), "new_feedback": counts}).id
        return _run(settings, engine, config, run_id)
    finally:
        heartbeat.stop()
        with session_scope(engine) as session:
            release_lease(session, name=LEASE, holder=holder)


def _run(settings: Settings, engine: Engine, config: CycleConfig, run_id: int) -> CycleResult:
    """Train run `run_id` (from its checkpoint, if it has one); a failure is recorded. Its
    checkpoint goes once the run has ended either way; a killed process leaves it behind."""
    try:
        return _train(settings, engine, config, run_id)
    except Exception as e:
        log.exception("cycle %d failed", run_id)
        with session_scope(engine) as session:
            runs.fail_run(session, run_id=run_id, error=f"{type(e).__name__}: {e}")
        return CycleResult("failed", str(e), run_id)
    finally:
        checkpoint_path(settings.data_dir, run_id).unlink(missing_ok=True)


def _train(settings: Settings, engine: Engine, config: CycleConfig, run_id: int) -> CycleResult:
    metrics: dict[str, Any] = {}

    def progress(stage: str, figures: dict) -> None:
        metrics[stage] = figures
        with session_scope(engine) as session:
            runs.record_progress(session, run_id=run_id, metrics=metrics)

    # 1. The data and the reward model, or, for a resumed run, what it had when it was killed.
    checkpoint = checkpoint_path(settings.data_dir, run_id)
    resumed = load_state(checkpoint)
    pairs, demos = [], []
    if resumed is None:
        reward_model, rm_dir, train_prompts, eval_prompts, pairs = _reward_stage(
            settings, engine, config, progress)
        demos = demonstrations(engine, seed=config.seed,
                               approved_rewrites_only=settings.review_rewrites)
        with session_scope(engine) as session:
            live = registry.live_adapter(session)
            live_version = live.version if live else None
        warm = (load_state(training_state_path(settings.data_dir, live_version))
                if live_version else None)
        ppo_state, adapter_weights = (warm[0] if warm else None), None
    else:
        ppo_state, saved = resumed
        metrics.update(saved["metrics"])
        rm_dir, live_version = Path(saved["reward_model"]), saved["parent"]
        train_prompts, eval_prompts = saved["train_prompts"], saved["eval_prompts"]
        adapter_weights = saved["adapter"]
        reward_model = RewardModel.load(rm_dir, models_dir=settings.models_dir)

    # 2. The policy (SFT on rewrites when there are enough, then the recipe's method),
    #    warm-started from the live adapter and, for PPO, the training state it ended
    #    with; the base model (adapter off) is the KL reference. PPO checkpoints.
    loaded = load_model(settings.model, models_dir=settings.models_dir)
    store = AdapterStore(settings.adapters_dir)
    policy = prepare_policy(loaded.model, config.ppo, store=store, warm_start=live_version)
    if adapter_weights is not None:
        set_peft_model_state_dict(policy, adapter_weights)

    resume_info = {"reward_model": str(rm_dir), "parent": live_version,
                   "train_prompts": train_prompts, "eval_prompts": eval_prompts}

    def keep(state: PPOState) -> None:  # all that a resume needs, in one atomic file
        save_state(checkpoint, state, adapter=lora_weights(policy),
                   metrics=metrics, **resume_info)

    if config.processes > 1:  # the same, data-parallel (trainer/parallel_stages.py)
        result = train_policy_on(
            config.processes, policy, config.policy_recipe(), model=settings.model,
            models_dir=settings.models_dir, adapters_dir=settings.adapters_dir,
            warm_start=live_version, prompts=train_prompts, pairs=pairs, demonstrations=demos,
            reward_model=rm_dir, progress=progress, ppo_state=ppo_state,
            checkpoint_path=checkpoint, resume_info=resume_info, metrics=metrics)
    else:
        result = train_policy(policy, loaded.tokenizer, config.policy_recipe(),
                              prompts=train_prompts, pairs=pairs, demonstrations=demos,
                              reward_fn=lambda p, c: reward_model.score(p, c),
                              progress=progress, ppo_state=ppo_state, checkpoint=keep)

    # 3. Evaluate against the live adapter (or the base model) on held-out prompts.
    baseline = None
    if live_version is not None:
        store.load(result.model, live_version, adapter_name="baseline")
        baseline = "baseline"
    report = evaluate_candidate(result.model, loaded.tokenizer, reward_model, eval_prompts,
                                candidate="default", baseline=baseline, config=config.eval,
                                judge=_configured_judge(settings))
    version = store.next_version()  # ours alone: we hold the cycle lease
    report.update(candidate=version, baseline=live_version or "base", method=result.method,
                  sft_steps=result.sft_steps, reward_model=rm_dir.name, parent=live_version,
                  reward_model_heldout=metrics["reward"].get("in_use_heldout"))

    # 4. Store the adapter (atomically) and the state its training ended with (the next
    #    cycle's warm start), then register it as a candidate with its report.
    if result.state is not None:
        save_state(training_state_path(settings.data_dir, version), result.state)
    with session_scope(engine) as session:
        register_policy_adapter(session, store, result.model, version=version,
                                parent=live_version, base_model=settings.model,
                                status="candidate", reward_model_version=rm_dir.name)
        registry.set_eval_report(session, version=version,
                                 report={**report, "markdown": render_markdown(report)})
        summary = {**metrics, "eval": {k: v for k, v in report.items() if k != "samples"}}
        runs.finish_run(session, run_id=run_id, metrics=summary, adapter_version=version)
    log.info("cycle %d made candidate %s", run_id, version)
    if settings.auto_promote:
        _auto_promote(settings, engine, version, report)
    return CycleResult("succeeded", run_id=run_id, adapter_version=version, metrics=summary)


def _configured_judge(settings: Settings):
    """The judge the settings name (FLYWHEEL_JUDGE...), for evaluation; None for none."""
    if not settings.judge_configured:
        return None
    from flywheel.judge import build_judge

    return build_judge(function=settings.judge, url=settings.judge_url,
                       model=settings.judge_model, api_key=settings.judge_api_key,
                       rubric=settings.judge_rubric, models_dir=settings.models_dir)


def _reward_stage(settings: Settings, engine: Engine, config: CycleConfig, progress
                  ) -> tuple[RewardModel, Path, list, list, list]:
    """Read the data and train the reward model: (the reward model the policy will learn
    from, its directory, the training prompts, the held-out evaluation prompts, the
    training pairs).

    All the data is read at once, at the start of the run's window: what arrives while the
    cycle trains waits for the next one (and a replay of the log up to the window's end
    sees what the cycle saw)."""
    until = utcnow().isoformat()  # the reward model sees every vote to date
    split = preference_pairs(engine, seed=config.seed,
                             approved_rewrites_only=settings.review_rewrites,
                             ai_feedback_max_share=settings.ai_feedback_max_share)
    prompts = user_prompts(engine, limit=config.prompt_limit, seed=config.seed)

    # Every kind of vote to date, starting from the current reward model. The new one
    # replaces it only if it is not worse on the held-out conversations (a split by
    # conversation that stays the same from version to version).
    if len(split.train) < config.min_pairs:
        raise ValueError(f"{len(split.train)} preference pairs; the reward model needs "
                         f"{config.min_pairs}")
    previous = current_reward_model(engine, settings.data_dir)
    recipe = replace(config.reward, models_dir=config.reward.models_dir or settings.models_dir,
                     base_model=config.reward.base_model or settings.model)
    reward_model, rm_metrics = train_reward_model_on(config.processes, split.train,
                                                     split.heldout, recipe,
                                                     train_labels=split.train_labels,
                                                     warm_start=previous)
    registered = register_reward_model(
        engine, reward_model, data_dir=settings.data_dir, validation_pairs=split.heldout,
        data_window={"since": None, "until": until, "pairs": len(split.train),
                     "heldout_pairs": len(split.heldout), "labels": len(split.train_labels)},
        actor="scheduler", models_dir=recipe.models_dir)
    progress("reward", {**rm_metrics, "version": registered.version,
                        "replaced_current": registered.kept,
                        "previous_version": previous.name if previous else None,
                        "pairs": len(split.train), "heldout_pairs": len(split.heldout),
                        "in_use_heldout": registered.heldout})
    rm_dir = registered.in_use
    if not registered.kept:
        reward_model = RewardModel.load(rm_dir, models_dir=settings.models_dir)
    try:  # each user's agreement with it: the weights of their votes from now on
        record_annotator_quality(engine, reward_model, version=rm_dir.name)
    except Exception:  # worth a warning, not the cycle
        log.warning("could not measure annotator quality", exc_info=True)

    # Some real user prompts are kept back for the evaluation.
    cut = max(1, int(len(prompts) * config.eval_share))
    return reward_model, rm_dir, prompts[cut:] or prompts, prompts[:cut], split.train


def promotion_gate(settings: Settings, report: dict) -> tuple[bool, dict]:
    """Whether a candidate's evaluation report passes the auto-promotion gate, and the
    figures it was judged on. The reward model's win rate over the live adapter must reach
    `auto_promote_min_win_rate`, and the low end of its 95% interval must lie above
    `auto_promote_min_win_rate_low`: on a few dozen pairs a win rate of 0.58 is as likely
    a worse candidate as a better one.

    That judgement is only as good as the reward model, which trained the candidate too:
    one that learned nothing from the votes still prefers what it trained. So the low end
    of its held-out margin's 90% interval (`trainer.reward.evaluate_reward_model`) must
    reach `auto_promote_min_reward_margin_low`; a model with no held-out pairs cannot show
    that (its low end counts as -inf)."""
    judged = report["reward_model_win_rate"]
    win, low = judged["rate"] or 0.0, judged["low"] or 0.0
    bad = report["empty_rate"] + report["degenerate_rate"]
    margin_low = (report.get("reward_model_heldout") or {}).get("margin_low")  # None: no pairs
    gate = {"win_rate": win, "win_rate_low": low, "pairs": judged["n"],
            "kl_to_base": report["kl_to_base"], "empty_or_degenerate": bad,
            "reward_margin_low": margin_low}
    passed = (win >= settings.auto_promote_min_win_rate
              and low > settings.auto_promote_min_win_rate_low
              and (-math.inf if margin_low is None else margin_low)
              >= settings.auto_promote_min_reward_margin_low
              and report["kl_to_base"] <= settings.auto_promote_max_kl
              and bad <= settings.auto_promote_max_degenerate)
    return passed, gate


def _auto_promote(settings: Settings, engine: Engine, version: str, report: dict) -> None:
    """Promote without an operator, only through the gate (an explicit setting)."""
    passed, gate = promotion_gate(settings, report)
    with session_scope(engine) as session:
        if passed:
            registry.set_adapter_status(session, version=version, status="approved",
                                        actor="scheduler", detail={"gate": gate})
            registry.promote(session, version=version, actor="scheduler")
        else:
            registry.record_audit_event(session, actor="scheduler", action="gate_failed",
                                        adapter_version=version, detail={"gate": gate})
    log.info("auto-promotion of %s: %s", version, "promoted" if passed else "held back",
             extra=gate)


def _take_over_abandoned_runs(session, settings: Settings) -> int | None:
    """We hold the lease, so a cycle still marked running has lost its worker: the newest
    one with a checkpoint is to be resumed (its id is returned); the others are failed."""
    resumable = None
    for run in runs.list_runs(session, kind=RunKind.cycle, status=RunStatus.running):
        if resumable is None and checkpoint_path(settings.data_dir, run.id).exists():
            resumable = run.id
            continue
        runs.fail_run(session, run_id=run.id, error="the worker stopped mid-cycle")
        checkpoint_path(settings.data_dir, run.id).unlink(missing_ok=True)
        log.warning("cycle %d was abandoned by its worker; marked failed", run.id)
    return resumable


def _last_cycle_end(session) -> datetime | None:
    done = runs.list_runs(session, kind=RunKind.cycle, status=RunStatus.succeeded, limit=1)
    return datetime.fromisoformat(done[0].data_window["until"]) if done else None


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None), list)) else str(value)


class _Heartbeat:
    """Renews the lease in the background while the cycle works."""

    def __init__(self, engine: Engine, holder: str, ttl_s: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(engine, holder, ttl_s),
                                        daemon=True, name="cycle-lease")
        self._thread.start()

    def _run(self, engine: Engine, holder: str, ttl_s: float) -> None:
        while not self._stop.wait(ttl_s / 3):
            with session_scope(engine) as session:
                if not acquire_lease(session, name=LEASE, holder=holder, ttl_s=ttl_s):
                    log.error("lost the cycle lease to another worker")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
