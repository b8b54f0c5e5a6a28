import pytest
from sqlalchemy.exc import IntegrityError

from feedback.db import session_scope
from feedback.errors import NotFound, RegistryError
from feedback.queries import adapters as aq

SHA = "0" * 64
LEGAL = {  # the lifecycle as DESIGN §3 draws it, written out independently of the code
    "training": {"candidate", "failed"},
    "candidate": {"approved", "rejected"},
    "approved": {"live", "rejected"},
    "live": {"retired"},
    "retired": {"live"},
    "rejected": set(),
    "failed": set(),
}
PATH_TO = {  # how to reach each status from a fresh (training) adapter
    "training": [], "candidate": ["candidate"], "approved": ["candidate", "approved"],
    "live": ["candidate", "approved", "live"], "retired": ["candidate", "approved", "live",
                                                           "retired"],
    "rejected": ["candidate", "rejected"], "failed": ["failed"],
}


def _register(session, version, **kw):
    return aq.register_adapter(session, version=version, base_model="tiny-llama",
                               path=f"/store/{version}", sha256=SHA, **kw)


def _advance(session, version, status, actor="ops"):
    for step in PATH_TO[status]:
        aq.set_adapter_status(session, version=version, status=step, actor=actor)
    return aq.get_adapter(session, version=version)


def _live(session, version):
    _register(session, version)
    return _advance(session, version, "live")


def test_register_get_and_list(session):
    first = _register(session, "policy-v1")
    second = _register(session, "policy-v2", parent_version="policy-v1", status="candidate")

    assert (second.parent_version, second.status, second.path) == ("policy-v1", "candidate",
                                                                    "/store/policy-v2")
    assert aq.get_adapter(session, version="policy-v1") is first
    assert aq.list_adapters(session) == [second, first]
    assert aq.list_adapters(session, status="candidate") == [second]
    assert aq.live_adapter(session) is None
    with pytest.raises(NotFound, match="adapter policy-v9 not found"):
        aq.get_adapter(session, version="policy-v9")


def test_register_refuses_what_would_corrupt_the_registry(session):
    _register(session, "policy-v1")
    with pytest.raises(RegistryError, match="adapter policy-v1 already exists"):
        _register(session, "policy-v1")
    with pytest.raises(RegistryError, match="sha256 must be 64 lowercase hex digits"):
        aq.register_adapter(session, version="v2", base_model="b", path="p", sha256="abc")
    with pytest.raises(RegistryError, match="starts as training or candidate, not live"):
        _register(session, "v2", status="live")
    with pytest.raises(RegistryError, match="adapter status must be one of"):
        _register(session, "v2", status="shiny")
    with pytest.raises(RegistryError, match="parent adapter policy-v0 is not registered"):
        _register(session, "v2", parent_version="policy-v0")
    for version in ("", "v" * 65):
        with pytest.raises(RegistryError, match="1 to 64 characters"):
            _register(session, version)
    assert [a.version for a in aq.list_adapters(session)] == ["policy-v1"]


def test_every_transition_outside_the_lifecycle_is_refused(session):
    for n, (old, new) in enumerate((o, n) for o in LEGAL for n in LEGAL):
        version = f"v{n}"
        _register(session, version)
        _advance(session, version, old)
        if new in LEGAL[old]:
            assert aq.set_adapter_status(session, version=version, status=new,
                                         actor="ops").status == new
        else:
            with pytest.raises(RegistryError, match=f"cannot go from {old} to {new}"):
                aq.set_adapter_status(session, version=version, status=new, actor="ops")
            assert aq.get_adapter(session, version=version).status == old
    with pytest.raises(RegistryError, match="adapter status must be one of"):
        aq.set_adapter_status(session, version="v0", status="deployed", actor="ops")
    with pytest.raises(NotFound):
        aq.set_adapter_status(session, version="nope", status="candidate", actor="ops")


def test_status_changes_are_audited(session, alice):
    _register(session, "policy-v1")
    _advance(session, "policy-v1", "candidate", actor="scheduler")
    aq.set_adapter_status(session, version="policy-v1", status="approved", actor="alice",
                          actor_id=alice.id, detail={"note": "looks good"})
    aq.promote(session, version="policy-v1", actor="alice", actor_id=alice.id)
    aq.record_audit_event(session, actor="alice", action="login")
    session.commit()
    session.expire_all()

    events = aq.list_audit_events(session, adapter_version="policy-v1")
    assert [(e.actor, e.action, e.detail) for e in events] == [
        ("alice", "promote", {"from": "approved", "to": "live"}),
        ("alice", "approve", {"note": "looks good", "from": "candidate", "to": "approved"}),
        ("scheduler", "offer", {"from": "training", "to": "candidate"}),
    ]
    assert events[0].actor_id == alice.id and events[0].created_at.tzinfo is not None
    assert [e.action for e in aq.list_audit_events(session, limit=2)] == ["login", "promote"]


def test_promoting_retires_the_live_adapter(session):
    _live(session, "policy-v1")
    _register(session, "policy-v2")
    _advance(session, "policy-v2", "approved")
    aq.promote(session, version="policy-v2", actor="ops")
    session.commit()

    assert aq.live_adapter(session).version == "policy-v2"
    assert aq.get_adapter(session, version="policy-v1").status == "retired"
    assert [a.version for a in aq.list_adapters(session, status="live")] == ["policy-v2"]
    retire = aq.list_audit_events(session, adapter_version="policy-v1")[0]
    assert (retire.action, retire.detail["replaced_by"]) == ("retire", "policy-v2")
    _register(session, "policy-v3", status="candidate")
    with pytest.raises(RegistryError, match="cannot go from candidate to live"):
        aq.promote(session, version="policy-v3", actor="ops")


def test_the_database_refuses_a_second_live_adapter(session):
    _live(session, "policy-v1")
    rogue = _register(session, "policy-v2")
    rogue.status = "live"
    session.add(rogue)
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_rollback_walks_back_through_promotions(session):
    for version in ("v1", "v2", "v3"):
        _live(session, version)

    assert aq.rollback(session, actor="ops").version == "v2"
    assert aq.get_adapter(session, version="v3").status == "retired"
    assert aq.rollback(session, actor="ops").version == "v1"  # not back to v3
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        aq.rollback(session, actor="ops")
    session.commit()

    assert [(a.version, a.status) for a in aq.list_adapters(session)] == [
        ("v3", "retired"), ("v2", "retired"), ("v1", "live")]
    (back, away) = aq.list_audit_events(session, limit=2)
    assert (back.adapter_version, back.action, back.detail["rolled_back"]) == ("v1",
                                                                               "rollback", "v2")
    assert (away.adapter_version, away.action, away.detail["back_to"]) == ("v2", "rollback",
                                                                           "v1")
    assert aq.promote(session, version="v3", actor="ops").status == "live"  # by hand


def test_rollback_brings_back_an_adapter_taken_offline(session):
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        aq.rollback(session, actor="ops")
    _live(session, "v1")
    aq.set_adapter_status(session, version="v1", status="retired", actor="ops")
    assert aq.live_adapter(session) is None

    assert aq.rollback(session, actor="ops").version == "v1"
    assert aq.live_adapter(session).version == "v1"


def test_eval_report(session):
    _register(session, "v1")
    aq.set_eval_report(session, version="v1", report={"reward_vs_live": 0.4, "kl": 0.02})
    session.commit()
    session.expire_all()

    assert aq.get_adapter(session, version="v1").eval_report == {"reward_vs_live": 0.4,
                                                                 "kl": 0.02}
    with pytest.raises(NotFound):
        aq.set_eval_report(session, version="v9", report={})


def test_traffic_share(session):
    for version in ("v1", "v2"):
        _register(session, version, status="candidate")
    aq.set_traffic_share(session, version="v1", share=0.25)
    assert aq.set_traffic_share(session, version="v2", share=0.75).traffic_share == 0.75

    with pytest.raises(RegistryError, match="add up to 1.05"):
        aq.set_traffic_share(session, version="v2", share=0.8)
    for share in (-0.1, 1.5, float("nan")):
        with pytest.raises(RegistryError, match="between 0 and 1"):
            aq.set_traffic_share(session, version="v1", share=share)
    _register(session, "v3")
    with pytest.raises(RegistryError, match="adapter v3 is training"):
        aq.set_traffic_share(session, version="v3", share=0.1)

    aq.set_adapter_status(session, version="v2", status="rejected", actor="ops")
    assert aq.get_adapter(session, version="v2").traffic_share == 0.0
    aq.set_adapter_status(session, version="v1", status="approved", actor="ops")
    assert aq.get_adapter(session, version="v1").traffic_share == 0.25
    aq.promote(session, version="v1", actor="ops")  # live serves whatever is left
    assert aq.get_adapter(session, version="v1").traffic_share == 0.0


def test_promotion_is_one_unit_of_work(engine):
    with session_scope(engine) as session:
        _live(session, "v1")
        _register(session, "v2")
        _advance(session, "v2", "approved")
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        aq.promote(session, version="v2", actor="ops")
        raise RuntimeError("the caller fails before committing")
    with session_scope(engine) as session:
        statuses = {a.version: a.status for a in aq.list_adapters(session)}
        assert statuses == {"v1": "live", "v2": "approved"}
        assert aq.list_audit_events(session, adapter_version="v2")[0].action == "approve"
        aq.promote(session, version="v2", actor="ops")
    with session_scope(engine) as session:
        statuses = {a.version: a.status for a in aq.list_adapters(session)}
    assert statuses == {"v1": "retired", "v2": "live"}
