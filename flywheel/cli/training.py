"""Training and evaluation commands: `train reward`, `eval reward` (and `train ppo`)."""

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, ModelOption, progress_bar, settings_from
from flywheel.errors import FlywheelError

train_app = typer.Typer(no_args_is_help=True, help="Train the reward model or the policy.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate a trained model.")


class Backbone(StrEnum):
    minilm = "minilm"
    policy_lora = "policy-lora"


ProcessesOption = Annotated[int, typer.Option(
    min=1, help="Train data-parallel on N processes of this machine (torchrun: gloo on CPU, "
    "NCCL with a GPU each). Under torchrun (several machines) leave it out.")]
DataFileOption = Annotated[Path | None, typer.Option(
    "--data", help="A preference file (JSON lines, optionally .gz: TRL preference, TRL "
    "unpaired or Anthropic HH). \\[default: the feedback store]", show_default=False)]


@train_app.command("reward")
def train_reward(
    ctx: typer.Context,
    data: DataFileOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Where to save the reward model (not registered). \\[default: the next version "
        "in the registry, under DATA_DIR/reward_models: current if it is not worse than the "
        "current one on the held-out pairs, else rejected]", show_default=False)] = None,
    backbone: Annotated[Backbone, typer.Option(
        help="minilm: the packaged MiniLM encoder; policy-lora: LoRA on --model.")]
    = Backbone.minilm,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training pairs.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per step.")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    max_length: Annotated[int, typer.Option(
        min=8, help="Tokens per conversation (the start is cut, the answer kept).")] = 256,
    margin: Annotated[float, typer.Option(help="Bradley–Terry margin.")] = 0.0,
    center_coef: Annotated[float, typer.Option(help="Reward centering weight.")] = 0.01,
    heldout_fraction: Annotated[float, typer.Option(
        min=0.0, max=0.9, help="Share of conversations held out for evaluation.")] = 0.1,
    max_user_share: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Most of the store's pairs one user may contribute.")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seeds the split, the order and the init.")] = 0,
    actor: Annotated[str | None, typer.Option(
        help="Who trains it, for the audit trail. \\[default: your login name]",
        show_default=False)] = None,
    processes: ProcessesOption = 1,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    model: ModelOption = None,
) -> None:
    """Train a Bradley–Terry reward model from a preference file or the feedback store,
    and register it (unless --out). Prints the held-out figures, last as one JSON line."""
    import getpass

    from feedback.db import open_store
    from feedback.formats import FormatError
    from feedback.models import utcnow
    from trainer.data import pairs_from_file, preference_pairs
    from trainer.distributed import on_main
    from trainer.reward import RewardConfig, register_reward_model, train_reward_model

    dp, device = _data_parallel(ctx, processes)
    settings = settings_from(db=db, data_dir=data_dir, model=model)
    engine = (open_store(settings.db_url, event_log=settings.event_log_path)  # rank 0's alone
              if dp.is_main and (data is None or out is None) else None)

    def read() -> tuple:  # on rank 0; every rank gets its result
        if data is not None:
            try:
                split = pairs_from_file(data, heldout_fraction=heldout_fraction, seed=seed)
            except FormatError as e:
                raise FlywheelError(str(e)) from None
            where, window = str(data), {"source": str(data)}
        else:
            window = {"source": "feedback store", "since": None, "until": utcnow().isoformat()}
            split = preference_pairs(engine, max_user_share=max_user_share,
                                     heldout_fraction=heldout_fraction, seed=seed,
                                     approved_rewrites_only=settings.review_rewrites)
            where = "the feedback store"
        if not split.train:
            raise FlywheelError(f"no preference pairs to train on in {where} "
                                f"({split.stats.get('heldout_pairs', 0)} held out)")
        return split, window

    split, window = on_main(dp, read)
    if dp.is_main:
        typer.echo(f"training on {len(split.train)} pairs and {len(split.train_labels)} "
                   f"labels, {len(split.heldout)} pairs held out"
                   + (f", on {dp.world_size} processes" if dp.world_size > 1 else ""))
    config = RewardConfig(backbone=backbone.value, base_model=settings.model,
                          models_dir=settings.models_dir, max_length=max_length, epochs=epochs,
                          batch_size=batch_size, lr=lr, margin=margin, center_coef=center_coef,
                          seed=seed, device=device)
    with progress_bar("training the reward model") as on_progress:
        reward_model, metrics = train_reward_model(split.train, split.heldout, config,
                                                   train_labels=split.train_labels,
                                                   on_progress=on_progress if dp.is_main
                                                   else None)
    if not dp.is_main:  # rank 0 saves and registers
        return
    if out is None:
        registered = register_reward_model(
            engine, reward_model, data_dir=settings.data_dir, validation_pairs=split.heldout,
            data_window={**window, "pairs": len(split.train), "heldout_pairs": len(split.heldout),
                         "labels": len(split.train_labels)},
            actor=actor or f"cli:{getpass.getuser()}", models_dir=settings.models_dir)
        path, promoted, version = registered.path, registered.kept, registered.version
        verdict = ("now current" if promoted
                   else f"rejected: {registered.in_use.name} stays current (it is better)")
        typer.echo(f"saved {registered.version} to {path} ({verdict})")
    else:
        path, promoted, version = reward_model.save(out), None, None
        typer.echo(f"saved {path}")
    typer.echo(json.dumps({**metrics, "path": str(path), "version": version,
                           "promoted": promoted, "data": split.stats}))


@eval_app.command("reward")
def eval_reward(
    model: Annotated[Path, typer.Option("--model", help="A saved reward model directory.")],
    data: Annotated[Path, typer.Option("--data", help="A preference file to score.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per batch.")] = 64,
    data_dir: DataDirOption = None,
) -> None:
    """Score every pair of a preference file; prints, last, one JSON line with `accuracy`."""
    from feedback.formats import FormatError
    from trainer.data import pairs_from_file
    from trainer.reward import RewardModel, evaluate_reward_model

    try:
        split = pairs_from_file(data, heldout_fraction=0.0)
    except FormatError as e:
        raise FlywheelError(str(e)) from None
    if not split.train:
        raise FlywheelError(f"no preference pairs in {data}")
    settings = settings_from(data_dir=data_dir)
    reward_model = RewardModel.load(model, models_dir=settings.models_dir)
    metrics = evaluate_reward_model(reward_model, split.train, batch_size=batch_size)
    typer.echo(f"accuracy {metrics['accuracy']:.4f} on {metrics['pairs']} pairs")
    typer.echo(json.dumps({**metrics, "model": str(model), "data": str(data)}))


@train_app.command("ppo")
def train_ppo_command(
    ctx: typer.Context,
    reward_model: Annotated[Path | None, typer.Option(
        "--reward-model", help="A saved reward model directory. \\[default: the current one "
        "in the registry]", show_default=False)] = None,
    prompts: Annotated[Path | None, typer.Option(
        "--prompts", help="JSON lines (optionally .gz) with a `prompt` (a string or a message "
        "list) per line. \\[default: real user turns from the feedback store]",
        show_default=False)] = None,
    steps: Annotated[int, typer.Option(min=1, help="PPO steps (rollout + updates).")] = 50,
    batch_size: Annotated[int, typer.Option(min=1, help="Answers per rollout.")] = 16,
    lr: Annotated[float, typer.Option(help="Learning rate of the LoRA weights.")] = 1e-4,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Answer length.")] = 64,
    beta: Annotated[float, typer.Option(help="KL coefficient in the reward.")] = 0.05,
    kl_cap: Annotated[float, typer.Option(help="Stop when the KL per answer passes this.")]
    = 8.0,
    prompt_limit: Annotated[int, typer.Option(min=1, help="User turns read from the store.")]
    = 512,
    warm_start: Annotated[bool, typer.Option(
        help="Start from the live adapter (else a fresh LoRA).")] = True,
    version: Annotated[str | None, typer.Option(
        "--version", "--out", help="The new adapter's version. \\[default: the next policy-vN]",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seeds sampling, prompt order and the init.")] = 0,
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
    from trainer.ppo import PPOConfig, prepare_policy, train_ppo
    from trainer.reward import RewardModel, current_reward_model, registered_version

    dp, device = _data_parallel(ctx, processes)
    settings = settings_from(db=db, data_dir=data_dir, model=model)
    engine = (open_store(settings.db_url, event_log=settings.event_log_path)  # rank 0's alone
              if dp.is_main else None)
    store = AdapterStore(settings.adapters_dir)
    config = PPOConfig(steps=steps, batch_size=batch_size, minibatch_size=min(8, batch_size),
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
        stored = store.save(result.model, version, adapter_name="default", parent=parent,
                            base_model=settings.model)
        summary = {"adapter": version, "stop_reason": result.stop_reason,
                   "steps": len(result.metrics), "final": result.metrics[-1],
                   "timings": result.timings}
        with session_scope(engine) as session:
            registry.register_adapter(session, version=version, base_model=settings.model,
                                      path=str(stored.path), sha256=stored.sha256,
                                      parent_version=parent, status="training",
                                      reward_model_version=rm_version)
            runs.finish_run(session, run_id=run_id, metrics=summary, adapter_version=version)
    except BaseException as e:
        if dp.is_main:
            with session_scope(engine) as session:
                runs.fail_run(session, run_id=run_id, error=f"{type(e).__name__}: {e}")
        raise
    typer.echo(f"saved adapter {version} to {stored.path} (registered as training)")
    typer.echo(json.dumps(summary))


def _data_parallel(ctx: typer.Context, processes: int):
    """(this process's place among the ranks, its device) for a training command: with
    `processes` > 1 the command line runs again under torchrun and this process exits with
    its code; under torchrun it joins the process group (left when the command ends)."""
    from trainer.distributed import setup, teardown, under_torchrun
    from trainer.launch import run_command_on

    if processes > 1 and not under_torchrun():
        raise typer.Exit(run_command_on(processes, _command_line(ctx)))
    dp, device = setup()
    ctx.call_on_close(teardown)
    return dp, device


def _command_line(ctx: typer.Context) -> list[str]:
    """The command and the options it was given, without --processes."""
    argv = ctx.command_path.split()[1:]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "processes" or value is None or value == param.default:
            continue
        if getattr(param, "is_flag", False):
            argv.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            argv += [param.opts[0], str(value)]
    return argv


def _print_step(log: dict[str, float]) -> None:
    keys = ("score", "kl", "kl_k3", "entropy", "clip_fraction", "value_loss", "response_length")
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
