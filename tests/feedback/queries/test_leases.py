import threading

from feedback.db import session_scope
from feedback.queries.leases import acquire_lease, lease_holder, release_lease


def _acquire(engine, holder, ttl_s=60.0, name="cycle"):
    with session_scope(engine) as session:
        return acquire_lease(session, name=name, holder=holder, ttl_s=ttl_s)


def test_a_held_lease_is_refused_to_others_and_renewed_for_its_holder(engine):
    assert _acquire(engine, "worker-a")
    assert not _acquire(engine, "worker-b")
    assert _acquire(engine, "worker-a")  # renewal
    with session_scope(engine) as session:
        assert lease_holder(session, name="cycle") == "worker-a"


def test_an_expired_lease_can_be_taken_over(engine):
    assert _acquire(engine, "crashed", ttl_s=-1)
    with session_scope(engine) as session:
        assert lease_holder(session, name="cycle") is None
    assert _acquire(engine, "worker-b")


def test_release_frees_the_lease_only_for_its_holder(engine):
    assert _acquire(engine, "worker-a")
    with session_scope(engine) as session:
        release_lease(session, name="cycle", holder="worker-b")
    assert not _acquire(engine, "worker-b")
    with session_scope(engine) as session:
        release_lease(session, name="cycle", holder="worker-a")
    assert _acquire(engine, "worker-b")


def test_leases_are_independent_by_name(engine):
    assert _acquire(engine, "worker-a", name="cycle")
    assert _acquire(engine, "worker-b", name="other")


def test_of_racing_processes_exactly_one_gets_the_lease(engine):
    winners, barrier = [], threading.Barrier(6)

    def race(holder):
        barrier.wait()
        if _acquire(engine, holder):
            winners.append(holder)

    threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
