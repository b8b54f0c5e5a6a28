"""Leases: locks that work across processes and machines, through the database.

Taking and renewing are single conditional statements, so two processes can never both
believe they hold a lease, on SQLite or PostgreSQL.
"""

from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, update

from feedback.models import Lease, utcnow


def acquire_lease(session: Session, *, name: str, holder: str, ttl_s: float) -> bool:
    """Take the lease (or renew it, for its holder); False if someone else holds it."""
    now = utcnow()
    taken = session.exec(
        update(Lease).where(col(Lease.name) == name,
                            (col(Lease.holder) == holder) | (col(Lease.expires_at) < now))
        .values(holder=holder, expires_at=now + timedelta(seconds=ttl_s)))
    if taken.rowcount:
        return True
    try:
        with session.begin_nested():
            session.add(Lease(name=name, holder=holder,
                              expires_at=now + timedelta(seconds=ttl_s)))
        return True
    except IntegrityError:  # it exists and is held by someone else
        return False


def release_lease(session: Session, *, name: str, holder: str) -> None:
    session.exec(delete(Lease).where(col(Lease.name) == name, col(Lease.holder) == holder))


def lease_holder(session: Session, *, name: str) -> str | None:
    """Who holds the lease now (None if free or expired)."""
    lease = session.get(Lease, name)
    if lease is None or lease.expires_at < utcnow():
        return None
    return lease.holder
