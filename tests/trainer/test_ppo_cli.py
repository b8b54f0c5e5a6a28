"""`flywheel train ppo`: prompts in, an adapter saved, registered as training, the run recorded."""

import json

from sqlmodel import Session
from typer.testing import CliRunner

from feedback.db import open_store
from feedback.queries import adapters, runs
from flywheel.cli import app
from trainer.reward import RewardModel


def test_train_ppo_saves_and_registers_an_adapter(tmp_path, tiny_model_dirs):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "hello there"},
        {"prompt": [{"role": "user", "content": "what is a cat?"}]},
    ]) + "\n")
    reward_dir = RewardModel.create(max_length=32, device="cpu").save(tmp_path / "rm")
    args = ["train", "ppo", "--data-dir", str(tmp_path / "data"), "--model",
            str(tiny_model_dirs["llama"]), "--reward-model", str(reward_dir), "--prompts",
            str(prompts), "--steps", "2", "--batch-size", "2", "--max-new-tokens", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "step 1:" in result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["adapter"] == "policy-v1" and summary["steps"] == 2
    assert (tmp_path / "data" / "adapters" / "policy-v1" / "adapter_model.safetensors").is_file()
    engine = open_store(f"sqlite:///{tmp_path / 'data' / 'flywheel.db'}")
    with Session(engine) as session:
        adapter = adapters.get_adapter(session, version="policy-v1")
        assert adapter.status == "training"
        assert adapter.reward_model_version is None  # --reward-model: not in the registry
        (run,) = runs.list_runs(session, kind="ppo")
        assert run.status == "succeeded" and run.adapter_version == "policy-v1"


def test_train_ppo_without_a_reward_model_says_so(tmp_path):
    result = CliRunner().invoke(app, ["train", "ppo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no reward model" in result.output
