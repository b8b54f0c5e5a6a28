"""The cycle's training stages on 2 processes: `"processes": 2` in the recipe, and the
worker's scheduled cycle trains its reward model and its policy data-parallel, then
registers them once, as on one process."""

import json

import pytest

from feedback.db import session_scope
from feedback.queries import adapters as registry
from feedback.queries import reward_models, runs
from flywheel.adapter_store import AdapterStore
from flywheel.errors import FlywheelError
from flywheel.settings import Settings
from tests.trainer.test_cycle import make_loop
from trainer.cycle import cycle_config_from
from trainer.worker import cycle_job


def recipe(tmp_path, **fields) -> Settings:
    path = tmp_path / "cycle.json"
    path.write_text(json.dumps(fields))
    return Settings(data_dir=tmp_path, cycle_config=path)


def test_the_recipe_sets_the_processes(tmp_path):
    assert cycle_config_from(recipe(tmp_path, processes=4)).processes == 4
    assert cycle_config_from(recipe(tmp_path)).processes == 1


@pytest.mark.parametrize(("fields", "says"), [
    ({"processes": 0}, "processes must be a whole number ≥ 1"),
    ({"processes": 1.5}, "processes must be a whole number ≥ 1"),
    ({"processes": 2, "method": "online_dpo"}, "online_dpo runs on one process"),
])
def test_a_bad_number_of_processes_is_a_clear_error(tmp_path, fields, says):
    with pytest.raises(FlywheelError, match=says):
        cycle_config_from(recipe(tmp_path, **fields))


@pytest.mark.slow
def test_the_worker_runs_a_cycle_on_two_processes(tmp_path, models_dir):
    settings, engine = make_loop(tmp_path / "data", models_dir)
    config = {"processes": 2, "min_new_feedback": 10, "min_pairs": 10, "prompt_limit": 16,
              "reward": {"max_length": 32, "batch_size": 8, "epochs": 1},
              "ppo": {"steps": 2, "batch_size": 4, "minibatch_size": 2, "ppo_epochs": 1,
                      "max_new_tokens": 4, "checkpoint_every": 1},
              "eval": {"max_prompts": 2, "max_new_tokens": 4, "batch_size": 2}}
    (tmp_path / "cycle.json").write_text(json.dumps(config))
    cycle_job(settings.model_copy(update={"cycle_config": tmp_path / "cycle.json"}))
    with session_scope(engine) as session:
        (run,) = runs.list_runs(session, kind="cycle")
        (adapter,) = registry.list_adapters(session)
        (reward_model,) = reward_models.list_reward_models(session)
    engine.dispose()
    assert run.status == "succeeded", run.error
    assert run.config["processes"] == 2
    steps = run.metrics["ppo"]["steps"]  # relayed from rank 0 as they came
    assert [step["step"] for step in steps] == [0, 1] and run.metrics["ppo"]["stop_reason"]
    assert run.adapter_version == adapter.version and adapter.status == "candidate"
    assert adapter.reward_model_version == reward_model.version == "rm-0001"
    assert reward_model.heldout["accuracy"] == run.metrics["reward"]["accuracy"]
    AdapterStore(settings.adapters_dir).verify(adapter.version)
    assert (settings.data_dir / "training-state" / f"{adapter.version}.pt").is_file()
    assert not list((settings.data_dir / "checkpoints").glob("*"))  # none left behind
