"""The cycle's recipe from settings: defaults, overridden section by section from JSON."""

import json

import pytest

from flywheel.errors import FlywheelError
from flywheel.settings import Settings
from trainer.cycle import CycleConfig, cycle_config_from


def test_without_a_file_the_defaults_hold(tmp_path):
    config = cycle_config_from(Settings(data_dir=tmp_path, cycle_min_feedback=7))
    assert config == CycleConfig(min_new_feedback=7)


def test_a_file_overrides_fields_and_sections_and_keeps_the_rest(tmp_path):
    path = tmp_path / "cycle.json"
    path.write_text(json.dumps({"seed": 3, "reward": {"max_length": 64},
                                "ppo": {"steps": 20, "learning_rate": 2e-3}}))
    config = cycle_config_from(Settings(data_dir=tmp_path, cycle_config=path))
    assert (config.seed, config.reward.max_length, config.ppo.steps) == (3, 64, 20)
    assert config.ppo.learning_rate == 2e-3
    assert config.ppo.batch_size == CycleConfig().ppo.batch_size
    assert config.reward.epochs == CycleConfig().reward.epochs


@pytest.mark.parametrize(("text", "says"), [
    ("{not json", "Expecting property name"),
    ("[1, 2]", "expected a JSON object"),
    ('{"ppo": {"stepz": 3}}', "stepz"),
    ('{"ppo": 3}', "'ppo' must be an object"),
    ('{"colour": "red"}', "colour"),
    ('{"method": "reinforce"}', "unknown method 'reinforce'"),
    ('{"dpo": {"betta": 1}}', "betta"),
])
def test_a_bad_file_is_a_clear_error_naming_it(tmp_path, text, says):
    path = tmp_path / "cycle.json"
    path.write_text(text)
    with pytest.raises(FlywheelError, match=says) as caught:
        cycle_config_from(Settings(data_dir=tmp_path, cycle_config=path))
    assert str(path) in str(caught.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FlywheelError, match="No such file"):
        cycle_config_from(Settings(data_dir=tmp_path, cycle_config=tmp_path / "nope.json"))
