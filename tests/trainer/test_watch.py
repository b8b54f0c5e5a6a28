"""The worker's watch job: it scores served answers with the current reward model once
each, and on a crowd whose thumbs fall while the reward model's score rises it raises the
alarm and, with FLYWHEEL_AUTO_ROLLBACK=1, rolls back to the previous adapter (audited, and
only once the adapter loads) — on SQLite and PostgreSQL."""

import pytest
from sqlmodel import select

from feedback.db import session_scope
from feedback.models import AuditEvent
from feedback.queries import adapters as registry
from feedback.queries import reward_models as rq
from feedback.watch import read_scores, scores_path
from flywheel.adapter_store import AdapterStore
from flywheel.errors import FlywheelError
from flywheel.settings import Settings
from tests.feedback.queries.test_watch import serve
from tests.server.hotswap_fixtures import AdapterMaker, corrupt, register
from trainer.reward import RewardModel, register_reward_model
from trainer.watch import score_served_answers, watch_once


@pytest.fixture(scope="module")
def maker(models_dir):
    return AdapterMaker(models_dir)


@pytest.fixture
def settings(tmp_path, db_url) -> Settings:
    return Settings(data_dir=tmp_path, db=db_url, auto_rollback=True,
                    auto_rollback_min_votes=50, auto_rollback_alpha=0.01)


def _promoted_pair(engine, settings, maker):
    """policy-v1 (files in the adapter store) was live; policy-v2 was promoted over it."""
    store = AdapterStore(settings.adapters_dir)
    first = maker.make(store, "policy-v1", seed=1)
    register(engine, first, status="live")
    second = maker.make(store, "policy-v2", seed=2)
    register(engine, second, status="approved", parent="policy-v1")
    with session_scope(engine) as session:
        registry.promote(session, version="policy-v2", actor="ops")
    return first


def _crowd(engine, settings):
    with session_scope(engine) as session:
        rq.register_reward_model(session, version="rm-0001", path="/rm/rm-0001",
                                 backbone="minilm", actor="scheduler")
        serve(session, "policy-v1", answers=60, up_rate=0.75, reward=0.0,
              data_dir=settings.data_dir, seed=1)
        serve(session, "policy-v2", answers=60, up_rate=0.3, reward=1.0,
              data_dir=settings.data_dir, seed=2)


@pytest.mark.slow
def test_the_alarm_rings_and_auto_rollback_restores_the_previous_adapter(
        engine, settings, maker):
    _promoted_pair(engine, settings, maker)
    _crowd(engine, settings)
    outcome = watch_once(settings, engine)
    assert outcome.scored == 0  # rm-0001 has no files; its scores came from the crowd
    assert outcome.report.alarm.raised, outcome.report.alarm.reason
    assert outcome.rolled_back_to == "policy-v1"
    with session_scope(engine) as session:
        assert registry.live_adapter(session).version == "policy-v1"
        assert registry.get_adapter(session, version="policy-v2").status == "retired"
        events = session.exec(select(AuditEvent).where(AuditEvent.actor == "scheduler")
                              .order_by(AuditEvent.id)).all()
    assert [(e.action, e.adapter_version) for e in events if e.adapter_version] == [
        ("reward_hacking_alarm", "policy-v2"), ("rollback", "policy-v2"),
        ("rollback", "policy-v1"), ("auto_rollback", "policy-v2")]
    assert "but people do not" in events[-4].detail["reason"]
    assert events[-1].detail["back_to"] == "policy-v1" and events[-1].detail["p_value"] < 0.01
    # policy-v1 came back by a rollback: the next run leaves it live.
    again = watch_once(settings, engine)
    assert again.rolled_back_to is None and "brought back by a rollback" in \
        again.report.rollback.reason


@pytest.mark.slow
def test_no_rollback_without_the_setting_or_when_the_previous_adapter_does_not_load(
        engine, settings, maker):
    first = _promoted_pair(engine, settings, maker)
    _crowd(engine, settings)
    off = watch_once(settings.model_copy(update={"auto_rollback": False}), engine)
    assert off.report.rollback.raised and off.rolled_back_to is None
    watch_once(settings.model_copy(update={"auto_rollback": False}), engine)
    with session_scope(engine) as session:  # the alarm is audited once, not every run
        assert len(session.exec(select(AuditEvent).where(
            AuditEvent.action == "reward_hacking_alarm")).all()) == 1
    corrupt(first)
    with pytest.raises(FlywheelError):
        watch_once(settings, engine)
    with session_scope(engine) as session:
        assert registry.live_adapter(session).version == "policy-v2"  # nothing changed
        assert not session.exec(select(AuditEvent).where(
            AuditEvent.action == "auto_rollback")).all()


def test_served_answers_are_scored_once_by_the_current_reward_model(engine, settings):
    with session_scope(engine) as session:
        serve(session, None, answers=3, up_rate=1.0, reward=0.0,
              data_dir=settings.data_dir / "elsewhere", seed=5)
    assert score_served_answers(settings, engine) == 0  # no reward model yet
    register_reward_model(engine, RewardModel.create(max_length=32, device="cpu"),
                          data_dir=settings.data_dir, validation_pairs=[], data_window={},
                          actor="test")
    assert score_served_answers(settings, engine, limit=2) == 2
    assert score_served_answers(settings, engine) == 1
    assert score_served_answers(settings, engine) == 0
    scores = read_scores(scores_path(settings.data_dir, "rm-0001"))
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores.values())
