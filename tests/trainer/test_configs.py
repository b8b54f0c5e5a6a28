"""The training configurations: one source of defaults, for the recipes and the CLI alike."""

import subprocess
import sys

import pytest
import typer

from flywheel.cli import app
from trainer.configs import DPOConfig, PPOConfig, RewardConfig

# (command path, option, the config field its default must be)
OPTIONS = [
    (("train", "ppo"), "steps", PPOConfig.steps),
    (("train", "ppo"), "batch_size", PPOConfig.batch_size),
    (("train", "ppo"), "lr", PPOConfig.learning_rate),
    (("train", "ppo"), "max_new_tokens", PPOConfig.max_new_tokens),
    (("train", "ppo"), "beta", PPOConfig.beta),
    (("train", "ppo"), "kl_cap", PPOConfig.kl_cap),
    (("train", "dpo"), "epochs", DPOConfig.epochs),
    (("train", "dpo"), "batch_size", DPOConfig.batch_size),
    (("train", "dpo"), "lr", DPOConfig.learning_rate),
    (("train", "dpo"), "beta", DPOConfig.beta),
    (("train", "dpo"), "max_length", DPOConfig.max_length),
    (("train", "reward"), "epochs", RewardConfig.epochs),
    (("train", "reward"), "lr", RewardConfig.lr),
    (("train", "reward"), "max_length", RewardConfig.max_length),
    (("train", "reward"), "center_coef", RewardConfig.center_coef),
    (("eval", "reward"), "batch_size", RewardConfig.eval_batch_size),
]


def _command(path: tuple[str, ...]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize(("path", "option", "expected"), OPTIONS,
                         ids=[f"{' '.join(p)} --{o}" for p, o, _ in OPTIONS])
def test_cli_defaults_are_the_configs(path, option, expected) -> None:
    params = {p.name: p for p in _command(path).params}
    assert params[option].default == expected


def test_the_configs_load_without_torch() -> None:
    code = ("import sys, trainer.configs, flywheel.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
