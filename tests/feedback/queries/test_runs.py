import pytest

from feedback.errors import NotFound, RegistryError
from feedback.queries import runs


def test_a_run_that_succeeds(session):
    run = runs.start_run(session, kind="ppo", config={"beta": 0.05},
                         data_window={"max_message_id": 42})
    assert (run.status, run.finished_at) == ("running", None)

    runs.finish_run(session, run_id=run.id, metrics={"kl": 0.01, "reward": 0.3},
                    adapter_version="policy-v2")
    session.commit()
    session.expire_all()

    stored = runs.get_run(session, run_id=run.id)
    assert (stored.kind, stored.status, stored.adapter_version) == ("ppo", "succeeded",
                                                                    "policy-v2")
    assert (stored.config, stored.data_window) == ({"beta": 0.05}, {"max_message_id": 42})
    assert stored.metrics == {"kl": 0.01, "reward": 0.3} and stored.error is None
    assert stored.started_at <= stored.finished_at


def test_a_run_that_fails(session):
    run = runs.start_run(session, kind="reward", config={}, data_window={})
    runs.fail_run(session, run_id=run.id, error="CUDA out of memory")
    session.commit()
    session.expire_all()

    stored = runs.get_run(session, run_id=run.id)
    assert (stored.status, stored.error, stored.metrics) == ("failed", "CUDA out of memory", {})
    assert stored.finished_at is not None


def test_a_run_ends_once(session):
    run = runs.start_run(session, kind="eval", config={}, data_window={})
    runs.finish_run(session, run_id=run.id, metrics={"accuracy": 0.7})

    with pytest.raises(RegistryError, match=f"training run {run.id} has already succeeded"):
        runs.fail_run(session, run_id=run.id, error="late")
    with pytest.raises(RegistryError, match="already succeeded"):
        runs.finish_run(session, run_id=run.id, metrics={})
    assert runs.get_run(session, run_id=run.id).metrics == {"accuracy": 0.7}
    with pytest.raises(NotFound, match="training run 999 not found"):
        runs.finish_run(session, run_id=999, metrics={})
    with pytest.raises(NotFound):
        runs.get_run(session, run_id=999)


def test_unknown_kinds_and_statuses_are_refused(session):
    with pytest.raises(RegistryError,
                       match="run kind must be one of reward, ppo, dpo, eval, cycle"):
        runs.start_run(session, kind="sft", config={}, data_window={})
    with pytest.raises(RegistryError, match="run kind must be one of"):
        runs.list_runs(session, kind="sft")
    with pytest.raises(RegistryError, match="run status must be one of running"):
        runs.list_runs(session, status="done")


def test_list_newest_first_by_kind_and_status(session):
    reward, ppo, cycle, ppo_again = (
        runs.start_run(session, kind=kind, config={}, data_window={})
        for kind in ("reward", "ppo", "cycle", "ppo"))
    runs.fail_run(session, run_id=ppo.id, error="diverged")

    assert runs.list_runs(session) == [ppo_again, cycle, ppo, reward]
    assert runs.list_runs(session, limit=2) == [ppo_again, cycle]
    assert runs.list_runs(session, kind="ppo") == [ppo_again, ppo]
    assert runs.list_runs(session, kind="ppo", status="running") == [ppo_again]
    assert runs.list_runs(session, status="failed") == [ppo]
    assert runs.list_runs(session, kind="eval") == []
