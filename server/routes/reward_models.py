"""Operator routes: the reward-model registry (read-only; the trainer registers them)."""

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from feedback.db import session_scope
from feedback.models import RewardModelStatus
from feedback.queries import reward_models as registry
from server.auth import Operator
from server.store import Store

router = APIRouter(prefix="/api", tags=["operators"])


class RewardModelOut(BaseModel):
    version: str
    parent_version: str | None  # the reward model that was current when it was trained
    status: str  # current, retired or rejected
    backbone: str
    path: str
    data_window: dict[str, Any]  # what it trained on: since, until, pairs, heldout_pairs
    heldout: dict[str, Any] | None  # accuracy, loss, ece, pairs on the held-out split
    trained_on_erased_data: bool  # a user whose data it saw was erased since: retrain
    created_at: datetime
    updated_at: datetime


class AuditEventOut(BaseModel):
    actor: str
    action: str  # registered, made_current, retired, rejected
    detail: dict[str, Any]
    created_at: datetime


class RewardModelDetail(RewardModelOut):
    audit: list[AuditEventOut]  # newest first


@router.get("/reward-models")
def list_reward_models(_: Operator, db: Store,
                       status: RewardModelStatus | None = None) -> list[RewardModelOut]:
    """Every reward model, newest first; with `status`, only those in it."""
    with session_scope(db) as session:
        return [RewardModelOut.model_validate(row, from_attributes=True)
                for row in registry.list_reward_models(session, status=status)]


@router.get("/reward-models/{version}")
def show_reward_model(version: str, _: Operator, db: Store) -> RewardModelDetail:
    """One reward model with its audit trail."""
    with session_scope(db) as session:
        row = registry.get_reward_model(session, version=version)
        audit = [AuditEventOut.model_validate(e, from_attributes=True)
                 for e in registry.reward_model_audit_events(session, version=version)]
        return RewardModelDetail(**RewardModelOut.model_validate(
            row, from_attributes=True).model_dump(), audit=audit)
