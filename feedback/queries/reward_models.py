"""The reward-model registry: every trained reward model, which one is current, and its
audit trail.

A reward model is registered current (the current one retires), rejected (it scored worse
than the current one on the held-out split) or, when an older store's models are imported,
retired. A retired one can become current again (the current one retires); a rejected one
stays rejected. At most one is current (a partial unique index backs that up). Every
registration and status change is audited on `audit_event.reward_model_version`:
"registered", then "made_current", "retired" or "rejected".
"""

import math
from typing import Any

from sqlmodel import Session, col, select

from feedback.errors import NotFound, RegistryError
from feedback.models import AuditEvent, RewardModelStatus, RewardModelVersion, utcnow

S = RewardModelStatus
TRANSITIONS: dict[RewardModelStatus, tuple[RewardModelStatus, ...]] = {
    S.current: (S.retired,), S.retired: (S.current,), S.rejected: ()}
ACTIONS = {S.current: "made_current", S.retired: "retired", S.rejected: "rejected"}


def _status(status: str) -> RewardModelStatus:
    try:
        return RewardModelStatus(status)
    except ValueError:
        raise RegistryError(f"reward model status must be one of "
                            f"{', '.join(RewardModelStatus)}, not {status!r}") from None


def _find(session: Session, version: str) -> RewardModelVersion | None:
    return session.exec(
        select(RewardModelVersion).where(RewardModelVersion.version == version)).first()


def register_reward_model(session: Session, *, version: str, path: str, backbone: str,
                          actor: str, status: str = RewardModelStatus.current,
                          parent_version: str | None = None,
                          data_window: dict[str, Any] | None = None,
                          heldout: dict[str, Any] | None = None, actor_id: int | None = None,
                          detail: dict[str, Any] | None = None) -> RewardModelVersion:
    """Record a new reward model version (never reused). Registered current, it retires
    the current one. `detail` goes into the audit event of its status (e.g. the held-out
    comparison that decided it)."""
    status = _status(status)
    if not 0 < len(version) <= 64:
        raise RegistryError(f"a reward model version has 1 to 64 characters, not {len(version)}")
    if not path:
        raise RegistryError(f"reward model {version} needs the path of its directory")
    if _find(session, version) is not None:
        raise RegistryError(f"reward model {version} already exists (a version is never reused)")
    if parent_version is not None and _find(session, parent_version) is None:
        raise RegistryError(f"parent reward model {parent_version} is not registered")
    if status is S.current:
        _retire_current(session, actor=actor, actor_id=actor_id, replaced_by=version)
    row = RewardModelVersion(version=version, path=path, backbone=backbone, status=status,
                             parent_version=parent_version, data_window=dict(data_window or {}),
                             heldout=finite_figures(heldout))
    session.add(row)
    _audit(session, row, "registered", actor=actor, actor_id=actor_id, detail={
        "status": status, "parent_version": parent_version, "heldout": row.heldout})
    _audit(session, row, ACTIONS[status], actor=actor, actor_id=actor_id, detail=detail)
    return row


def get_reward_model(session: Session, *, version: str) -> RewardModelVersion:
    row = _find(session, version)
    if row is None:
        raise NotFound(f"reward model {version} not found")
    return row


def list_reward_models(session: Session, *,
                       status: str | None = None) -> list[RewardModelVersion]:
    """Reward models, newest first; with `status`, only those in it."""
    query = select(RewardModelVersion).order_by(col(RewardModelVersion.id).desc())
    if status is not None:
        query = query.where(RewardModelVersion.status == _status(status))
    return list(session.exec(query))


def current_reward_model(session: Session) -> RewardModelVersion | None:
    """The reward model the loop uses, or None before the first one."""
    return session.exec(
        select(RewardModelVersion).where(RewardModelVersion.status == S.current)).first()


def set_reward_model_status(session: Session, *, version: str, status: str, actor: str,
                            actor_id: int | None = None,
                            detail: dict[str, Any] | None = None) -> RewardModelVersion:
    """Retire the current reward model, or make a retired one current again (the current
    one retires); audited."""
    row = get_reward_model(session, version=version)
    old, new = RewardModelStatus(row.status), _status(status)
    if new not in TRANSITIONS[old]:
        allowed = ", ".join(TRANSITIONS[old]) or "nothing (it is final)"
        raise RegistryError(f"reward model {version} cannot go from {old} to {new} "
                            f"(from {old} it can go to {allowed})")
    if new is S.current:
        _retire_current(session, actor=actor, actor_id=actor_id, replaced_by=version)
    _set(session, row, new, actor=actor, actor_id=actor_id,
         detail={**(detail or {}), "from": old, "to": new})
    return row


def mark_trained_on_erased_data(session: Session, *, versions: list[str], actor: str,
                                detail: dict[str, Any] | None = None) -> list[str]:
    """Mark reward models whose training data included a user who has since been erased
    (an operator retrains them); each mark is audited ("trained_on_erased_data")."""
    rows = list(session.exec(select(RewardModelVersion).where(
        col(RewardModelVersion.version).in_(versions))))
    for row in rows:
        row.trained_on_erased_data = True
        session.add(row)
        _audit(session, row, "trained_on_erased_data", actor=actor, actor_id=None,
               detail=detail)
    return [row.version for row in rows]


def reward_model_audit_events(session: Session, *, version: str,
                              limit: int = 100) -> list[AuditEvent]:
    """One reward model's audit trail, newest first."""
    return list(session.exec(
        select(AuditEvent).where(AuditEvent.reward_model_version == version)
        .order_by(col(AuditEvent.id).desc()).limit(limit)))


def _retire_current(session: Session, *, actor: str, actor_id: int | None,
                    replaced_by: str) -> None:
    current = current_reward_model(session)
    if current is not None:  # its audit event flushes it, freeing the single current slot
        _set(session, current, S.retired, actor=actor, actor_id=actor_id,
             detail={"replaced_by": replaced_by})


def _set(session: Session, row: RewardModelVersion, status: RewardModelStatus, *,
         actor: str, actor_id: int | None, detail: dict[str, Any]) -> None:
    row.status = status
    row.updated_at = utcnow()
    session.add(row)
    _audit(session, row, ACTIONS[status], actor=actor, actor_id=actor_id, detail=detail)


def _audit(session: Session, row: RewardModelVersion, action: str, *, actor: str,
           actor_id: int | None, detail: dict[str, Any] | None) -> None:
    session.add(AuditEvent(actor=actor, actor_id=actor_id, action=action,
                           reward_model_version=row.version, detail=dict(detail or {})))
    session.flush()


def finite_figures(figures: dict[str, Any] | None) -> dict[str, Any] | None:
    """NaN (no held-out pairs) as null: JSON has no NaN, and PostgreSQL refuses it."""
    if figures is None:
        return None
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in figures.items()}
