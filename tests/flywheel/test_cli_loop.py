"""The loop's commands: adapters, runs, cycle, worker and up."""

import json

import pytest
from typer.testing import CliRunner

from feedback.db import open_store, session_scope
from feedback.queries import adapters as registry
from feedback.queries import runs
from flywheel.cli import app
from trainer.worker import make_scheduler

runner = CliRunner()
SHA = "0" * 64


def flywheel(*args: str):
    return runner.invoke(app, list(args), prog_name="flywheel")


@pytest.fixture
def store(db_url):
    engine = open_store(db_url)
    with session_scope(engine) as session:
        for version in ("policy-v1", "policy-v2"):
            registry.register_adapter(session, version=version, base_model="demo",
                                      path=f"/adapters/{version}", sha256=SHA,
                                      status="candidate")
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


def test_the_scheduler_runs_one_cycle_job_at_a_time(tmp_path):
    from flywheel.settings import Settings

    scheduler = make_scheduler(Settings(data_dir=tmp_path, cycle_interval_s=42),
                               background=True)
    (job,) = scheduler.get_jobs()
    assert job.id == "cycle" and job.max_instances == 1 and job.coalesce
    assert job.trigger.interval.total_seconds() == 42


@pytest.mark.parametrize("command", ["up", "worker", "cycle"])
def test_loop_commands_have_help_with_the_common_options(command):
    result = flywheel(command, "--help")
    assert result.exit_code == 0
    assert "--db" in result.stdout and "--data-dir" in result.stdout
