"""`flywheel replay`: the logged prompts answered again by an adapter on the demo model,
both answers scored by the current reward model."""

import json

import pytest
from typer.testing import CliRunner

from feedback.db import open_store, session_scope
from feedback.queries.conversations import add_message, create_conversation
from feedback.queries.users import create_user
from flywheel.adapter_store import AdapterStore
from flywheel.cli import app
from flywheel.model_loading import load_model
from flywheel.settings import Settings
from tests.trainer.synthetic import synthetic_pairs
from trainer.ppo import PPOConfig, prepare_policy
from trainer.reward import RewardConfig, register_reward_model, train_reward_model

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def logged(tmp_path, models_dir):
    """A data dir with adapter policy-v1 and a reward model, and an event log of three
    answered prompts (two by policy-v1, one by the base model) and one unanswered."""
    (tmp_path / "models").symlink_to(models_dir)
    settings = Settings(data_dir=tmp_path, model="demo")
    engine = open_store(settings.db_url, event_log=settings.event_log_path)
    with session_scope(engine) as s:
        user = create_user(s, handle="alice")
        for n, version in enumerate(("policy-v1", None, "policy-v1")):
            c = create_conversation(s, user_id=user.id)
            q = add_message(s, conversation_id=c.id, role="user", content=f"Tell me a fact {n}.")
            add_message(s, conversation_id=c.id, role="assistant", content=f"Fact {n} is kind.",
                        parent_id=q.id, adapter_version=version)
        add_message(s, conversation_id=c.id, role="user", content="And another?")
    policy = prepare_policy(load_model("demo", models_dir=models_dir).model, PPOConfig())
    AdapterStore(settings.adapters_dir).save(policy, "policy-v1", base_model="demo")
    reward_model, _ = train_reward_model(synthetic_pairs(16), [],
                                         RewardConfig(max_length=32, batch_size=8))
    register_reward_model(engine, reward_model, data_dir=settings.data_dir,
                          validation_pairs=[], data_window={}, actor="test")
    engine.dispose()
    return settings


def test_replay_reports_reward_deltas_per_logged_adapter(logged, tmp_path):
    out = tmp_path / "rows.jsonl"
    result = runner.invoke(app, ["replay", "--adapter", "policy-v1", "--log",
                                 str(logged.event_log_path), "--out", str(out),
                                 "--max-new-tokens", "4", "--data-dir", str(logged.data_dir)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["adapter"] == "policy-v1" and figures["reward_model"] == "rm-0001"
    assert figures["answers"] == 3 and figures["delta_low"] <= figures["mean_delta"]
    assert figures["mean_delta"] <= figures["delta_high"]
    assert {v: g["answers"] for v, g in figures["by_logged_adapter"].items()} == {
        "base": 1, "policy-v1": 2}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["message_id"] for r in rows] == [2, 4, 6]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Tell me a fact 0."}]
    assert rows[0]["logged"] == "Fact 0 is kind." and isinstance(rows[0]["replayed"], str)
    assert rows[0]["delta"] == pytest.approx(rows[0]["replayed_reward"]
                                             - rows[0]["logged_reward"])
    args = ["replay", "--adapter", "policy-v1", "--log", str(logged.event_log_path),
            "--max-new-tokens", "4", "--data-dir", str(logged.data_dir)]
    again = json.loads(runner.invoke(app, args).stdout.strip().splitlines()[-1])
    assert again["mean_delta"] == figures["mean_delta"]  # seeded: the same answers
    first = json.loads(runner.invoke(app, [*args, "--limit", "1"]).stdout.splitlines()[-1])
    assert first["answers"] == 1 and list(first["by_logged_adapter"]) == ["policy-v1"]


def test_an_unknown_adapter_is_one_error_line(logged):
    result = runner.invoke(app, ["replay", "--adapter", "policy-v9", "--log",
                                 str(logged.event_log_path), "--data-dir",
                                 str(logged.data_dir)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "policy-v9" in result.stderr
