import pytest
from sqlalchemy.exc import IntegrityError

from feedback.errors import NotFound, RegistryError
from feedback.queries import adapters as aq
from feedback.queries import reward_models as rq

HELDOUT = {"accuracy": 0.75, "loss": 0.52, "ece": 0.04, "pairs": 40}


def _register(session, version, **kw):
    return rq.register_reward_model(session, version=version, path=f"/rm/{version}",
                                    backbone="minilm", actor="scheduler", **kw)


def _trail(session, version):
    return [(e.action, e.actor) for e in reversed(rq.reward_model_audit_events(
        session, version=version))]


def test_register_get_list_and_current(session):
    first = _register(session, "rm-0001", heldout=HELDOUT,
                      data_window={"since": None, "until": "2026-01-01T00:00:00", "pairs": 9})
    assert rq.current_reward_model(session) is first
    second = _register(session, "rm-0002", parent_version="rm-0001")

    assert (first.status, second.status, second.parent_version) == ("retired", "current",
                                                                     "rm-0001")
    assert first.heldout == HELDOUT and first.data_window["pairs"] == 9
    assert rq.current_reward_model(session) is second
    assert rq.get_reward_model(session, version="rm-0001") is first
    assert rq.list_reward_models(session) == [second, first]
    assert rq.list_reward_models(session, status="retired") == [first]
    with pytest.raises(NotFound, match="reward model rm-0009 not found"):
        rq.get_reward_model(session, version="rm-0009")
    with pytest.raises(RegistryError, match="status must be one of current, retired"):
        rq.list_reward_models(session, status="live")


def test_a_rejected_model_leaves_the_current_one_alone(session):
    _register(session, "rm-0001")
    rejected = _register(session, "rm-0002", parent_version="rm-0001", status="rejected",
                         detail={"accuracy": 0.5, "current_accuracy": 0.7})

    assert rejected.status == "rejected"
    assert rq.current_reward_model(session).version == "rm-0001"
    events = rq.reward_model_audit_events(session, version="rm-0002")
    assert [e.action for e in events] == ["rejected", "registered"]
    assert events[0].detail == {"accuracy": 0.5, "current_accuracy": 0.7}
    assert events[1].detail["status"] == "rejected"
    with pytest.raises(RegistryError, match="cannot go from rejected to current"):
        rq.set_reward_model_status(session, version="rm-0002", status="current", actor="ops")


def test_every_change_is_audited(session):
    _register(session, "rm-0001")
    _register(session, "rm-0002")
    rq.set_reward_model_status(session, version="rm-0001", status="current", actor="ops",
                               actor_id=None, detail={"why": "rm-0002 misjudges"})

    assert _trail(session, "rm-0001") == [("registered", "scheduler"),
                                          ("made_current", "scheduler"),
                                          ("retired", "scheduler"), ("made_current", "ops")]
    assert _trail(session, "rm-0002") == [("registered", "scheduler"),
                                          ("made_current", "scheduler"), ("retired", "ops")]
    back = rq.reward_model_audit_events(session, version="rm-0001")[0]
    assert back.detail == {"why": "rm-0002 misjudges", "from": "retired", "to": "current"}
    assert rq.reward_model_audit_events(session, version="rm-0002")[0].detail == {
        "replaced_by": "rm-0001"}
    assert all(e.adapter_version is None for e in aq.list_audit_events(session))
    with pytest.raises(RegistryError, match="cannot go from current to current"):
        rq.set_reward_model_status(session, version="rm-0001", status="current", actor="ops")


def test_register_refuses_what_would_corrupt_the_registry(session):
    _register(session, "rm-0001")
    with pytest.raises(RegistryError, match="reward model rm-0001 already exists"):
        _register(session, "rm-0001")
    with pytest.raises(RegistryError, match="parent reward model rm-0007 is not registered"):
        _register(session, "rm-0002", parent_version="rm-0007")
    with pytest.raises(RegistryError, match="1 to 64 characters"):
        _register(session, "")
    with pytest.raises(RegistryError, match="needs the path"):
        rq.register_reward_model(session, version="rm-0003", path="", backbone="minilm",
                                 actor="ops")
    with pytest.raises(RegistryError, match="status must be one of"):
        _register(session, "rm-0004", status="live")


def test_no_heldout_pairs_are_stored_as_null(session):
    row = _register(session, "rm-0001", heldout={**HELDOUT, "accuracy": float("nan"),
                                                 "pairs": 0})
    session.commit()
    session.expire_all()
    assert rq.get_reward_model(session, version="rm-0001").heldout["accuracy"] is None
    assert row.heldout["pairs"] == 0


def test_at_most_one_is_current_in_the_database(session):
    _register(session, "rm-0001")
    rogue = _register(session, "rm-0002", status="rejected")
    rogue.status = "current"
    session.add(rogue)
    with pytest.raises(IntegrityError, match="(?i)unique"):
        session.flush()
    session.rollback()


def test_an_adapter_records_its_reward_model(session):
    _register(session, "rm-0001")
    adapter = aq.register_adapter(session, version="policy-v1", base_model="demo",
                                  path="/store/policy-v1", sha256="0" * 64,
                                  reward_model_version="rm-0001")
    assert adapter.reward_model_version == "rm-0001"
    assert aq.register_adapter(session, version="policy-v2", base_model="demo",
                               path="/p", sha256="0" * 64).reward_model_version is None
    with pytest.raises(RegistryError, match="reward model rm-0005 is not registered"):
        aq.register_adapter(session, version="policy-v3", base_model="demo", path="/p",
                            sha256="0" * 64, reward_model_version="rm-0005")
