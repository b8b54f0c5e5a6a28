"""Training and evaluation commands: `train reward`, `eval reward`; what every training
command shares (`--processes`). The policy's are in policy_training.py."""

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, ModelOption, progress_bar, settings_from
from flywheel.errors import FlywheelError
from trainer.configs import DEFAULT_HELDOUT_FRACTION, DEFAULT_MAX_USER_SHARE, RewardConfig

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
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training pairs.")]
    = RewardConfig.epochs,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per step.")]
    = RewardConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = RewardConfig.lr,
    max_length: Annotated[int, typer.Option(
        min=8, help="Tokens per conversation (the start is cut, the answer kept).")]
    = RewardConfig.max_length,
    margin: Annotated[float, typer.Option(help="Bradley–Terry margin.")] = RewardConfig.margin,
    center_coef: Annotated[float, typer.Option(help="Reward centering weight.")]
    = RewardConfig.center_coef,
    heldout_fraction: Annotated[float, typer.Option(
        min=0.0, max=0.9, help="Share of conversations held out for evaluation.")]
    = DEFAULT_HELDOUT_FRACTION,
    max_user_share: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Most of the store's pairs one user may contribute.")]
    = DEFAULT_MAX_USER_SHARE,
    seed: Annotated[int, typer.Option(help="Seeds the split, the order and the init.")]
    = RewardConfig.seed,
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
    from trainer.reward import register_reward_model, train_reward_model

    dp, device = run_on_processes(ctx, processes)
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
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per batch.")]
    = RewardConfig.eval_batch_size,
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


def run_on_processes(ctx: typer.Context, processes: int):
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
