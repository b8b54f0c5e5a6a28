"""Reproducing a cycle from a flywheel log: run cycles on one store, export its log,
rebuild a fresh store from it, and `cycle --from-log` gives the same metrics exactly."""

import gzip
import json

import pytest
from typer.testing import CliRunner

from feedback.db import open_store, session_scope
from feedback.exporter import export_feedback
from feedback.importer import import_file
from feedback.queries import adapters as registry
from feedback.queries import reward_models as rq
from feedback.replay import replay_log
from flywheel.cli import app
from flywheel.settings import Settings
from tests.trainer.synthetic import synthetic_rows
from tests.trainer.test_cycle import tiny
from trainer.cycle import run_cycle
from trainer.reproduce import reproduce_cycle

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def two_cycles(tmp_path_factory, models_dir):
    """A store (with its event log) where cycle 1 made policy-v1, which went live, and
    cycle 2 warm-started from it. Shared by the tests: they only read it."""
    tmp_path = tmp_path_factory.mktemp("store")
    data = tmp_path / "votes.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in synthetic_rows(40)))
    (tmp_path / "models").symlink_to(models_dir)
    settings = Settings(data_dir=tmp_path, model="demo")
    engine = open_store(settings.db_url, event_log=settings.event_log_path)
    import_file(engine, data)
    first = run_cycle(settings, engine, tiny())
    with session_scope(engine) as session:
        registry.set_adapter_status(session, version=first.adapter_version,
                                    status="approved", actor="test")
        registry.promote(session, version=first.adapter_version, actor="test")
    second = run_cycle(settings, engine, tiny(), force=True)
    assert (first.status, second.status) == ("succeeded", "succeeded"), second.reason
    yield settings, engine, first, second
    engine.dispose()


def test_export_replay_and_reproduce_a_warm_started_cycle_exactly(two_cycles, tmp_path):
    settings, engine, first, second = two_cycles
    exported, rebuilt_log = tmp_path / "export.jsonl.gz", tmp_path / "rebuilt.jsonl"
    export_feedback(engine, fmt="log", out=exported)
    fresh = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    replay_log(fresh, exported)
    export_feedback(fresh, fmt="log", out=rebuilt_log)
    fresh.dispose()
    with open(rebuilt_log) as rebuilt:
        assert [json.loads(line) for line in rebuilt][1:] == _records(exported)

    result = runner.invoke(app, ["cycle", "--from-log", str(rebuilt_log), "--seed", "0",
                                 "--run", str(second.run_id), "--data-dir",
                                 str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["match"] and figures["differences"] == 0 and figures["figures"] > 40
    assert "the metrics match exactly" in result.stdout and "note:" not in result.stdout
    assert "eval.baseline" in result.stdout and "policy-v1" in result.stdout  # warm start


def test_the_event_log_reproduces_the_first_cycle(two_cycles):
    settings, _, first, _ = two_cycles
    same = reproduce_cycle(settings, settings.event_log_path, run_id=first.run_id)
    assert same.matches and same.status == "succeeded" and same.notes == []
    assert same.logged["reward.accuracy"] == first.metrics["reward"]["accuracy"]
    assert same.reproduced["ppo.steps[0].kl"] == first.metrics["ppo"]["steps"][0]["kl"]


def test_the_event_log_reproduces_the_second_cycle_with_the_reward_model_it_began_with(
        two_cycles):
    settings, engine, _, second = two_cycles
    with session_scope(engine) as session:
        before = [(r.version, r.status, r.path) for r in rq.list_reward_models(session)]
    same = reproduce_cycle(settings, settings.event_log_path, run_id=second.run_id)
    assert same.matches and same.notes == [], same.differences
    assert same.reproduced["reward.previous_version"] == "rm-0001"
    with session_scope(engine) as session:  # the store it came from is left alone
        assert [(r.version, r.status, r.path) for r in rq.list_reward_models(session)] == before


def test_a_missing_parent_adapter_is_said_and_the_mismatch_shown(two_cycles, tmp_path):
    settings, engine, _, second = two_cycles
    log = tmp_path / "export.jsonl"
    export_feedback(engine, fmt="log", out=log)
    elsewhere = Settings(data_dir=tmp_path / "elsewhere", model="demo")
    (elsewhere.data_dir / "models").parent.mkdir()
    (elsewhere.data_dir / "models").symlink_to(settings.models_dir.resolve())
    result = reproduce_cycle(elsewhere, log, run_id=second.run_id)
    assert any("which is not in" in note and "base model" in note for note in result.notes)
    assert not result.matches and "eval.baseline" in result.differences


def _records(path) -> list[dict]:
    with gzip.open(path, "rt") as lines:
        return [json.loads(line) for line in lines][1:]
