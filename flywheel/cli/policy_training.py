"""Policy training commands: `train ppo` (against a reward model) and `train dpo` (on
preference pairs). Each trains the LoRA adapter, from the live one unless told not to, saves
it to the adapter store, registers it as "training" and records the run; `--processes N`
trains data-parallel (flywheel/cli/training.py). Both are commands of the `train` group."""

import json
from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, ModelOption, settings_from
from flywheel.cli.training import DataFileOption, ProcessesOption, run_on_processes
from flywheel.errors import FlywheelError
from trainer.configs import DEFAULT_PROMPT_LIMIT, DPOConfig, PPOConfig

WarmStartOption = Annotated[bool, typer.Option(
    help="Start from the live adapter (else a fresh LoRA).")]
AdapterVersionOption = Annotated[str | None, typer.Option(
    "--version", "--out", help="The new adapter's version. \\[default: the next policy-vN]",
    show_default=False)]


def train_ppo_command(
    ctx: typer.Context,
    reward_model: Annotated[Path | None, typer.Option(
        "--reward-model", help="A saved reward model directory. \\[default: the current one "
        "in the registry]", show_default=False)] = None,
    prompts: Annotated[Path | None, typer.Option(
        "--prompts", help="JSON lines (optionally .gz) with a `prompt` (a string or a message "
        "list) per line. \\[default: real user turns from the feedback store]",
        show_default=False)] = None,
    steps: Annotated[int, typer.Option(min=1, help="PPO steps (rollout + updates).")]
    = PPOConfig.steps,
    batch_size: Annotated[int, typer.Option(min=1, help="Answers per rollout.")]
    = PPOConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Learning rate of the LoRA weights.")]
    = PPOConfig.learning_rate,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Answer length.")]
    = PPOConfig.max_new_tokens,
    beta: Annotated[float, typer.Option(help="KL coefficient in the reward.")] = PPOConfig.beta,
    kl_cap: Annotated[float, typer.Option(help="Stop when the KL per answer passes this.")]
    = PPOConfig.kl_cap,
    prompt_limit: Annotated[int, typer.Option(min=1, help="User turns read from the store.")]
    = DEFAULT_PROMPT_LIMIT,
    warm_start: WarmStartOption = True,
    version: AdapterVersionOption = None,
    seed: Annotated[int, typer.Option(help="Seeds sampling, prompt order and the init.")]
    = PPOConfig.seed,
    processes: ProcessesOption = 1,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    model: ModelOption = None,
) -> None:
    """Train the policy's LoRA adapter with PPO against a reward model, save it to the adapter
    store and register it as "training" (the cycle decides what it becomes). Prints a line
    per step and, last, one JSON line."""
    from dataclasses import asdict

    from feedback.db import open_store, session_scope
    from feedback.queries import adapters as registry
    from feedback.queries import runs
    from flywheel.adapter_store import AdapterStore
    from flywheel.model_loading import load_model
    from trainer.data import user_prompts
    from trainer.distributed import on_main
    from trainer.ppo import prepare_policy, train_ppo
    from trainer.reward import RewardModel, current_reward_model, registered_version

    dp, device = run_on_processes(ctx, processes)
    settings = settings_from(db=db, data_dir=data_dir, model=model)
    engine = (open_store(settings.db_url, event_log=settings.event_log_path)  # rank 0's alone
              if dp.is_main else None)
    store = AdapterStore(settings.adapters_dir)
    config = PPOConfig(steps=steps, batch_size=batch_size,
                       minibatch_size=min(PPOConfig.minibatch_size, batch_size),
                       learning_rate=lr, max_new_tokens=max_new_tokens, beta=beta,
                       kl_cap=kl_cap, seed=seed)

    def read() -> tuple:  # on rank 0; every rank gets its result
        scorer_path = reward_model or current_reward_model(engine, settings.data_dir)
        if scorer_path is None:
            raise FlywheelError("no reward model: train one with `flywheel train reward` or "
                                "pass --reward-model")
        if prompts is not None:
            turns, source = _read_prompts(prompts), str(prompts)
        else:
            turns, source = user_prompts(engine, limit=prompt_limit, seed=seed), "feedback store"
        if not turns:
            raise FlywheelError(f"no prompts to train on in the {source}")
        if batch_size < dp.world_size:
            raise FlywheelError(f"--batch-size {batch_size} is less than the "
                                f"{dp.world_size} processes: each needs a prompt a step")
        with session_scope(engine) as session:
            live = registry.live_adapter(session) if warm_start else None
            parent = live.version if live else None
        return scorer_path, turns, source, parent, version or store.next_version()

    reward_model, turns, source, parent, version = on_main(dp, read)
    if dp.is_main:
        rm_version = registered_version(engine, settings.data_dir, reward_model)
        with session_scope(engine) as session:
            run_id = runs.start_run(session, kind="ppo", config={
                **asdict(config), "reward_model": str(reward_model), "warm_start": parent,
                "processes": dp.world_size},
                data_window={"prompts": len(turns), "source": source}).id
    try:
        loaded = load_model(settings.model, models_dir=settings.models_dir, device=device)
        scorer = RewardModel.load(reward_model, models_dir=settings.models_dir, device=device)
        policy = prepare_policy(loaded.model, config, store=store, warm_start=parent)
        if dp.is_main:
            typer.echo(f"PPO on {len(turns)} prompts from the {source}, "
                       f"{'warm start from ' + parent if parent else 'fresh LoRA'}"
                       + (f", on {dp.world_size} processes" if dp.world_size > 1 else ""))
        result = train_ppo(policy, loaded.tokenizer, turns, lambda p, c: scorer.score(p, c),
                           config, on_step=_print_step if dp.is_main else None)
        if not dp.is_main:  # rank 0 saves and registers
            return
        summary = {"adapter": version, "stop_reason": result.stop_reason,
                   "steps": len(result.metrics), "final": result.metrics[-1],
                   "timings": result.timings}
        _register(engine, store, result.model, run_id=run_id, summary=summary,
                  version=version, parent=parent, base_model=settings.model,
                  reward_model_version=rm_version)
    except BaseException as e:
        if dp.is_main:
            _fail(engine, run_id, e)
        raise

def train_dpo_command(
    ctx: typer.Context,
    data: DataFileOption = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the pairs.")] = DPOConfig.epochs,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per step.")] = DPOConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Learning rate of the LoRA weights.")]
    = DPOConfig.learning_rate,
    beta: Annotated[float, typer.Option(help="Strength of DPO's implicit KL penalty.")]
    = DPOConfig.beta,
    max_length: Annotated[int, typer.Option(
        min=8, help="Prompt and answer tokens (the prompt loses its start first).")]
    = DPOConfig.max_length,
    warm_start: WarmStartOption = True,
    version: AdapterVersionOption = None,
    seed: Annotated[int, typer.Option(help="Seeds the split, the order and the init.")]
    = DPOConfig.seed,
    processes: ProcessesOption = 1,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    model: ModelOption = None,
) -> None:
    """Train the policy's LoRA adapter with DPO on preference pairs (a file, or the store's
    training split), the reference being the adapter switched off; save it to the adapter
    store and register it as "training". Prints a line per step and, last, one JSON line."""
    from dataclasses import asdict

    from feedback.db import open_store, session_scope
    from feedback.formats import FormatError
    from feedback.queries import adapters as registry
    from feedback.queries import runs
    from flywheel.adapter_store import AdapterStore
    from flywheel.model_loading import load_model
    from trainer.data import pairs_from_file, preference_pairs
    from trainer.distributed import on_main
    from trainer.dpo import train_dpo
    from trainer.ppo import prepare_policy

    dp, device = run_on_processes(ctx, processes)
    settings = settings_from(db=db, data_dir=data_dir, model=model)
    engine = (open_store(settings.db_url, event_log=settings.event_log_path)  # rank 0's alone
              if dp.is_main else None)
    store = AdapterStore(settings.adapters_dir)
    config = DPOConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, beta=beta,
                       max_length=max_length, seed=seed)

    def read() -> tuple:  # on rank 0; every rank gets its result
        if data is not None:
            try:
                pairs, source = pairs_from_file(data, seed=seed).train, str(data)
            except FormatError as e:
                raise FlywheelError(str(e)) from None
        else:
            pairs = preference_pairs(engine, seed=seed,
                                     approved_rewrites_only=settings.review_rewrites).train
            source = "feedback store"
        if not pairs:
            raise FlywheelError(f"no preference pairs to train on in the {source}")
        with session_scope(engine) as session:
            live = registry.live_adapter(session) if warm_start else None
            parent = live.version if live else None
        return pairs, source, parent, version or store.next_version()

    pairs, source, parent, version = on_main(dp, read)
    if dp.is_main:
        with session_scope(engine) as session:
            run_id = runs.start_run(session, kind="dpo", config={
                **asdict(config), "warm_start": parent, "processes": dp.world_size},
                data_window={"pairs": len(pairs), "source": source}).id
    try:
        loaded = load_model(settings.model, models_dir=settings.models_dir, device=device)
        policy = prepare_policy(loaded.model, PPOConfig(seed=seed), store=store,
                                warm_start=parent)
        if dp.is_main:
            typer.echo(f"DPO on {len(pairs)} pairs from the {source}, "
                       f"{'warm start from ' + parent if parent else 'fresh LoRA'}"
                       + (f", on {dp.world_size} processes" if dp.world_size > 1 else ""))
        result = train_dpo(policy, loaded.tokenizer, pairs, config,
                           on_step=_print_step if dp.is_main else None)
        if not dp.is_main:  # rank 0 saves and registers
            return
        summary = {"adapter": version, "steps": len(result.metrics),
                   "final": result.metrics[-1], "timings": result.timings}
        _register(engine, store, result.model, run_id=run_id, summary=summary,
                  version=version, parent=parent, base_model=settings.model)
    except BaseException as e:
        if dp.is_main:
            _fail(engine, run_id, e)
        raise


def _register(engine, store, model, *, run_id: int, summary: dict, version: str,
              parent: str | None, base_model: str, reward_model_version: str | None = None
              ) -> None:
    """Save and register the trained adapter as "training", finish the run, and say so."""
    from feedback.db import session_scope
    from feedback.queries import runs
    from trainer.policy_stage import register_policy_adapter

    with session_scope(engine) as session:
        stored = register_policy_adapter(session, store, model, version=version, parent=parent,
                                         base_model=base_model, status="training",
                                         reward_model_version=reward_model_version)
        runs.finish_run(session, run_id=run_id, metrics=summary, adapter_version=version)
    typer.echo(f"saved adapter {version} to {stored.path} (registered as training)")
    typer.echo(json.dumps(summary))


def _fail(engine, run_id: int, error: BaseException) -> None:
    from feedback.db import session_scope
    from feedback.queries import runs

    with session_scope(engine) as session:
        runs.fail_run(session, run_id=run_id, error=f"{type(error).__name__}: {error}")


def _print_step(log: dict[str, float]) -> None:
    keys = ("score", "kl", "kl_k3", "entropy", "clip_fraction", "value_loss", "response_length",
            "loss", "margin", "accuracy")
    figures = "  ".join(f"{k} {log[k]:.3f}" for k in keys if k in log)
    typer.echo(f"step {int(log['step'])}: {figures}" + ("  (KL cap: stopped)"
                                                       if log.get("stopped") else ""))


def _read_prompts(path: Path) -> list[list[dict[str, str]]]:
    """The `prompt` of every line: a string becomes one user turn."""
    from feedback.formats import FormatError, iter_lines, parse_json

    turns = []
    try:
        for number, raw in iter_lines(path):
            row = parse_json(raw, first=number == 1)
            prompt = row.get("prompt") if isinstance(row, dict) else None
            if isinstance(prompt, str) and prompt.strip():
                turns.append([{"role": "user", "content": prompt}])
            elif isinstance(prompt, list) and prompt:
                turns.append([{"role": m["role"], "content": m["content"]} for m in prompt])
            else:
                raise FormatError(f"{path}:{number}: no `prompt` (a string or a message list)")
    except (FormatError, KeyError, TypeError) as e:
        raise FlywheelError(f"cannot read prompts: {e}") from None
    return turns
