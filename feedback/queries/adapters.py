"""The adapter registry: every trained LoRA adapter, its lifecycle and its audit trail.

An adapter goes training → candidate → approved → live → retired; a candidate or an
approved one can be rejected, a training one can fail, and a retired one can go live
again. At most one adapter is live: making one live retires the live one in the same
transaction (a partial unique index backs that up). Every status change is audited.
"""

import re
from typing import Any

from sqlmodel import Session, col, select

from feedback.errors import NotFound, RegistryError
from feedback.models import Adapter, AdapterStatus, AuditEvent, RewardModelVersion, utcnow

S = AdapterStatus
TRANSITIONS: dict[AdapterStatus, tuple[AdapterStatus, ...]] = {
    S.training: (S.candidate, S.failed),
    S.candidate: (S.approved, S.rejected),
    S.approved: (S.live, S.rejected),
    S.live: (S.retired,),
    S.retired: (S.live,),
    S.rejected: (),
    S.failed: (),
}
# The audit action that records a move into each status (a rollback records "rollback").
ACTIONS = {S.candidate: "offer", S.approved: "approve", S.live: "promote", S.retired: "retire",
           S.rejected: "reject", S.failed: "fail"}
SHARING = (S.candidate, S.approved)  # the statuses that may serve a share of the traffic
SHA256 = re.compile(r"[0-9a-f]{64}")


def _status(status: str) -> AdapterStatus:
    try:
        return AdapterStatus(status)
    except ValueError:
        raise RegistryError(
            f"adapter status must be one of {', '.join(AdapterStatus)}, not {status!r}") from None


def _find(session: Session, version: str) -> Adapter | None:
    return session.exec(select(Adapter).where(Adapter.version == version)).first()


# -- the registry ---------------------------------------------------------------------


def register_adapter(session: Session, *, version: str, base_model: str, path: str,
                     sha256: str, parent_version: str | None = None,
                     status: str = AdapterStatus.training,
                     reward_model_version: str | None = None) -> Adapter:
    """Record a new adapter version (and the reward model that trained it). Versions are
    immutable: registering one twice fails."""
    status = _status(status)
    if status not in (S.training, S.candidate):
        raise RegistryError(f"a new adapter starts as training or candidate, not {status}")
    if not 0 < len(version) <= 64:
        raise RegistryError(f"an adapter version has 1 to 64 characters, not {len(version)}")
    if not SHA256.fullmatch(sha256):
        raise RegistryError(f"sha256 must be 64 lowercase hex digits, not {sha256!r}")
    if _find(session, version) is not None:
        raise RegistryError(f"adapter {version} already exists (a version is never reused)")
    if parent_version is not None and _find(session, parent_version) is None:
        raise RegistryError(f"parent adapter {parent_version} is not registered")
    if reward_model_version is not None and session.exec(select(RewardModelVersion).where(
            RewardModelVersion.version == reward_model_version)).first() is None:
        raise RegistryError(f"reward model {reward_model_version} is not registered")
    adapter = Adapter(version=version, base_model=base_model, path=path, sha256=sha256,
                      parent_version=parent_version, status=status,
                      reward_model_version=reward_model_version)
    session.add(adapter)
    session.flush()
    return adapter


def get_adapter(session: Session, *, version: str) -> Adapter:
    adapter = _find(session, version)
    if adapter is None:
        raise NotFound(f"adapter {version} not found")
    return adapter


def list_adapters(session: Session, *, status: str | None = None) -> list[Adapter]:
    """Adapters, newest first; with `status`, only those in it."""
    query = select(Adapter).order_by(col(Adapter.id).desc())
    if status is not None:
        query = query.where(Adapter.status == _status(status))
    return list(session.exec(query))


def live_adapter(session: Session) -> Adapter | None:
    """The adapter serving users, or None while the base model serves alone."""
    return session.exec(select(Adapter).where(Adapter.status == S.live)).first()


def set_eval_report(session: Session, *, version: str, report: dict[str, Any]) -> Adapter:
    adapter = get_adapter(session, version=version)
    adapter.eval_report = dict(report)
    adapter.updated_at = utcnow()
    session.add(adapter)
    session.flush()
    return adapter


def set_traffic_share(session: Session, *, version: str, share: float) -> Adapter:
    """The fraction of chats a candidate or approved adapter answers beside the live one
    (side-by-side battles). The shares of all such adapters add up to at most 1."""
    if not 0.0 <= share <= 1.0:
        raise RegistryError(f"a traffic share is between 0 and 1, not {share}")
    adapter = get_adapter(session, version=version)
    if adapter.status not in SHARING:
        raise RegistryError(f"only a candidate or approved adapter takes a traffic share; "
                            f"adapter {version} is {adapter.status}")
    others = sum(a.traffic_share for a in session.exec(
        select(Adapter).where(col(Adapter.status).in_(SHARING), Adapter.version != version)))
    if others + share > 1.0 + 1e-9:
        raise RegistryError(f"traffic shares would add up to {others + share:.3g}, more than 1 "
                            f"(other adapters already take {others:.3g})")
    adapter.traffic_share = share
    adapter.updated_at = utcnow()
    session.add(adapter)
    session.flush()
    return adapter


# -- the lifecycle --------------------------------------------------------------------


def set_adapter_status(session: Session, *, version: str, status: str, actor: str,
                       actor_id: int | None = None,
                       detail: dict[str, Any] | None = None) -> Adapter:
    """Move an adapter along its lifecycle and audit the move. Going live retires the
    adapter that was live."""
    adapter = get_adapter(session, version=version)
    return _move(session, adapter, _status(status), actor=actor, actor_id=actor_id,
                 detail=detail)


def promote(session: Session, *, version: str, actor: str,
            actor_id: int | None = None) -> Adapter:
    """Make an approved (or a retired) adapter live; the live one is retired."""
    return set_adapter_status(session, version=version, status=S.live, actor=actor,
                              actor_id=actor_id)


def rollback(session: Session, *, actor: str, actor_id: int | None = None) -> Adapter:
    """Bring back the adapter that was live before the current one and retire the current
    one. Adapters retired by a rollback are skipped, so a second rollback goes one more
    step back instead of returning to the adapter just rolled back."""
    target = rollback_target(session)
    if target is None:
        raise RegistryError("nothing to roll back to: no adapter was retired by a promotion")
    current = live_adapter(session)
    if current is not None:
        _move(session, current, S.retired, actor=actor, actor_id=actor_id, action="rollback",
              detail={"back_to": target.version})
    return _move(session, target, S.live, actor=actor, actor_id=actor_id, action="rollback",
                 detail={"rolled_back": current.version if current else None})


def rollback_target(session: Session) -> Adapter | None:
    """The retired adapter whose retirement (its latest "retire" or "rollback" event) is
    the most recent one that was not a rollback."""
    retired = {a.version: a for a in list_adapters(session, status=S.retired)}
    events = session.exec(
        select(AuditEvent)
        .where(col(AuditEvent.adapter_version).in_(list(retired)),
               col(AuditEvent.action).in_(("retire", "rollback")))
        .order_by(col(AuditEvent.id).desc()))
    seen: set[str] = set()
    for event in events:
        if event.adapter_version in seen:
            continue
        if event.action == "retire":
            return retired[event.adapter_version]
        seen.add(event.adapter_version)
    return None


def _move(session: Session, adapter: Adapter, new: AdapterStatus, *, actor: str,
          actor_id: int | None, detail: dict[str, Any] | None,
          action: str | None = None) -> Adapter:
    old = AdapterStatus(adapter.status)
    if new not in TRANSITIONS[old]:
        allowed = ", ".join(TRANSITIONS[old]) or "nothing (it is final)"
        raise RegistryError(f"adapter {adapter.version} cannot go from {old} to {new} "
                            f"(from {old} it can go to {allowed})")
    if new is S.live and (current := live_adapter(session)) is not None:
        # Its audit event flushes it, freeing the single live slot before we take it.
        _move(session, current, S.retired, actor=actor, actor_id=actor_id, detail={
            "replaced_by": adapter.version})
    adapter.status = new
    if new not in SHARING:
        adapter.traffic_share = 0.0
    adapter.updated_at = utcnow()
    session.add(adapter)
    record_audit_event(session, actor=actor, action=action or ACTIONS[new],
                       adapter_version=adapter.version, actor_id=actor_id,
                       detail={**(detail or {}), "from": old, "to": new})
    return adapter


def mark_trained_on_erased_data(session: Session, *, versions: list[str], actor: str,
                                detail: dict[str, Any] | None = None) -> list[str]:
    """Mark adapters whose training data included a user who has since been erased (an
    operator retrains them); each mark is audited ("trained_on_erased_data")."""
    adapters = list(session.exec(select(Adapter).where(col(Adapter.version).in_(versions))))
    for adapter in adapters:
        adapter.trained_on_erased_data = True
        session.add(adapter)
        record_audit_event(session, actor=actor, action="trained_on_erased_data",
                           adapter_version=adapter.version, detail=detail)
    return [adapter.version for adapter in adapters]


# -- the audit trail ------------------------------------------------------------------


def record_audit_event(session: Session, *, actor: str, action: str,
                       adapter_version: str | None = None, actor_id: int | None = None,
                       detail: dict[str, Any] | None = None) -> AuditEvent:
    """Note who (a user's handle, or "scheduler") did what, to which adapter."""
    event = AuditEvent(actor=actor, action=action, adapter_version=adapter_version,
                       actor_id=actor_id, detail=dict(detail or {}))
    session.add(event)
    session.flush()
    return event


def list_audit_events(session: Session, *, adapter_version: str | None = None,
                      limit: int = 100) -> list[AuditEvent]:
    """The newest events first; with `adapter_version`, only that adapter's."""
    query = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
    if adapter_version is not None:
        query = query.where(AuditEvent.adapter_version == adapter_version)
    return list(session.exec(query))
