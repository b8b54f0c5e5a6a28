"""The loop's commands: adapters, runs, cycle, worker and up."""

import json

import pytest
from typer.testing import CliRunner

from feedback.db import open_store, session_scope
from feedback.queries import adapters as registry
from feedback.queries import runs
from feedback.queries.reward_models import register_reward_model
from flywheel.adapter_store import AdapterStore
from flywheel.cli import app
from tests.fixtures.tiny_models import save_tiny_adapter
from trainer.worker import make_scheduler

runner = CliRunner()


def flywheel(*args: str):
    return runner.invoke(app, list(args), prog_name="flywheel")


@pytest.fixture
def store(db_url, tmp_path, monkeypatch):
    """Two candidates, stored in the adapter store of the data directory and registered."""
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path))
    adapters = AdapterStore(tmp_path / "adapters")
    engine = open_store(db_url)
    with session_scope(engine) as session:
        register_reward_model(session, version="rm-0001", path=str(tmp_path / "rm-0001"),
                              backbone="minilm", actor="scheduler")
        for seed, version in enumerate(("policy-v1", "policy-v2")):
            stored = save_tiny_adapter(adapters, version, seed=seed)
            registry.register_adapter(session, version=version, base_model="tiny",
                                      path=str(stored.path), sha256=stored.sha256,
                                      status="candidate", reward_model_version="rm-0001")
    yield db_url, engine
    engine.dispose()


def test_approve_promote_and_roll_back_from_the_command_line(store):
    url, engine = store
    assert "policy-v2        candidate" in flywheel("adapters", "list", "--db", url).stdout
    for args in (("approve", "policy-v1"), ("promote", "policy-v1"),
                 ("approve", "policy-v2"), ("promote", "policy-v2")):
        result = flywheel("adapters", *args, "--db", url, "--actor", "alice")
        assert result.exit_code == 0, result.output
    assert flywheel("adapters", "rollback", "--db", url).stdout.strip() == "policy-v1 is now live"
    with session_scope(engine) as session:
        assert registry.live_adapter(session).version == "policy-v1"
        actors = {e.actor for e in registry.list_audit_events(session)}
    assert "alice" in actors and any(a.startswith("cli:") for a in actors)
    shown = flywheel("adapters", "show", "policy-v2", "--db", url).stdout
    assert "retired" in shown and "promote" in shown and "by alice" in shown
    assert "reward model rm-0001" in shown


def test_an_adapter_that_cannot_be_served_is_not_made_live(store, tmp_path):
    """Rolling back to, or promoting, an adapter whose files no longer match the registry's
    checksum is refused before anything is committed."""
    url, engine = store
    for args in (("approve", "policy-v1"), ("promote", "policy-v1"),
                 ("approve", "policy-v2"), ("promote", "policy-v2")):
        assert flywheel("adapters", *args, "--db", url).exit_code == 0
    weights = tmp_path / "adapters" / "policy-v1" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # truncated since it retired

    for args in (("rollback",), ("promote", "policy-v1")):
        refused = flywheel("adapters", *args, "--db", url)
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.startswith("error: policy-v1 was not made live, as servers "
                                         "could not serve it: adapter policy-v1: ")
        assert "does not match its checksum" in refused.stderr
    with session_scope(engine) as session:
        assert registry.live_adapter(session).version == "policy-v2"
        assert registry.get_adapter(session, version="policy-v1").status == "retired"
        newest = registry.list_audit_events(session, limit=1)
    assert (newest[0].action, newest[0].adapter_version) == ("promote", "policy-v2")


def test_illegal_moves_and_unknown_versions_are_one_error_line(store):
    url, _ = store
    for args in (("promote", "policy-v1"), ("approve", "nope")):
        result = flywheel("adapters", *args, "--db", url)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_runs_are_listed_and_shown(store):
    url, engine = store
    with session_scope(engine) as session:
        run = runs.start_run(session, kind="cycle", config={"seed": 1}, data_window={})
        runs.fail_run(session, run_id=run.id, error="out of memory")
    listed = flywheel("runs", "list", "--db", url).stdout
    assert "cycle" in listed and "failed" in listed and "out of memory" in listed
    shown = json.loads(flywheel("runs", "show", str(run.id), "--db", url).stdout)
    assert shown["error"] == "out of memory" and shown["config"] == {"seed": 1}


def test_a_cycle_if_due_waits_for_feedback(tmp_path):
    result = flywheel("cycle", "--if-due", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "cycle skipped: 0 new votes" in result.output


def test_the_scheduler_runs_one_cycle_job_and_one_watch_job_at_a_time(tmp_path):
    from flywheel.settings import Settings

    scheduler = make_scheduler(Settings(data_dir=tmp_path, cycle_interval_s=42,
                                        watch_interval_s=7), background=True)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"cycle", "watch"}
    assert all(job.max_instances == 1 and job.coalesce for job in jobs.values())
    assert jobs["cycle"].trigger.interval.total_seconds() == 42
    assert jobs["watch"].trigger.interval.total_seconds() == 7


@pytest.mark.parametrize("command", ["up", "worker", "cycle"])
def test_loop_commands_have_help_with_the_common_options(command):
    result = flywheel(command, "--help")
    assert result.exit_code == 0
    assert "--db" in result.stdout and "--data-dir" in result.stdout
