"""Operator routes: the adapter registry and training runs. Every action is audited under
the operator's handle, and this server reconciles its adapters at once (the others
converge by polling)."""

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from feedback.db import session_scope
from feedback.models import AdapterStatus, RunKind, RunStatus
from feedback.queries import adapters as registry
from feedback.queries import runs
from feedback.queries.battles import battle_record
from feedback.stats import win_rate
from server.auth import Operator
from server.deps import Adapters
from server.store import Store

router = APIRouter(prefix="/api", tags=["operators"])


class LiveBattles(BaseModel):
    """How users judged this adapter against the live one (or the base model) side by
    side; the win rate is Bradley–Terry with a 95% bootstrap interval, ties half."""

    opponent: str
    wins: int
    losses: int
    ties: int
    both_bad: int
    win_rate: float | None
    low: float | None
    high: float | None


class AdapterOut(BaseModel):
    version: str
    parent_version: str | None
    base_model: str
    status: str
    sha256: str
    traffic_share: float
    eval_report: dict[str, Any] | None
    reward_model_version: str | None  # the reward model that trained it
    trained_on_erased_data: bool  # a user whose data it saw was erased since: retrain
    created_at: datetime
    updated_at: datetime
    loaded: bool = False  # held in memory by the server that answered
    live_battles: LiveBattles | None = None  # users' side-by-side verdicts vs live


class TrafficIn(BaseModel):
    share: float = Field(ge=0, le=1, description="share of default traffic, 0 to 1")


class RunOut(BaseModel):
    id: int
    kind: str
    status: str
    data_window: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None
    adapter_version: str | None
    started_at: datetime
    finished_at: datetime | None


def _out(adapter, adapters, session) -> AdapterOut:
    out = AdapterOut.model_validate(adapter, from_attributes=True)
    out.loaded = adapter.version in adapters.loaded
    if adapter.status in (AdapterStatus.candidate, AdapterStatus.approved):
        live = registry.live_adapter(session)
        opponent = live.version if live else None
        record = battle_record(session, model=adapter.version, opponent=opponent)
        rate = win_rate(record.wins, record.losses, record.ties)
        out.live_battles = LiveBattles(
            opponent=opponent or "base", wins=record.wins, losses=record.losses,
            ties=record.ties, both_bad=record.both_bad, win_rate=rate.rate, low=rate.low,
            high=rate.high)
    return out


@router.get("/adapters")
def list_adapters(_: Operator, db: Store, adapters: Adapters,
                  status: AdapterStatus | None = None) -> list[AdapterOut]:
    with session_scope(db) as session:
        return [_out(a, adapters, session)
                for a in registry.list_adapters(session, status=status)]


@router.get("/adapters/{version}")
def show_adapter(version: str, _: Operator, db: Store, adapters: Adapters) -> AdapterOut:
    return _show(db, adapters, version)


def _show(db, adapters, version: str) -> AdapterOut:
    with session_scope(db) as session:
        return _out(registry.get_adapter(session, version=version), adapters, session)


async def _act(db, adapters, change) -> AdapterOut:
    """`change(session)` committed (on disk before this server, and its replicas, act on
    it), this server reconciled, then the adapter changed; each unit of work in a thread."""
    def commit() -> str:
        with session_scope(db) as session:
            return change(session).version
    version = await asyncio.to_thread(commit)
    await adapters.sync()
    return await asyncio.to_thread(_show, db, adapters, version)


@router.post("/adapters/{version}/approve")
async def approve(version: str, operator: Operator, db: Store,
                  adapters: Adapters) -> AdapterOut:
    return await _act(db, adapters, lambda session: registry.set_adapter_status(
        session, version=version, status="approved", actor=operator.handle,
        actor_id=operator.id))


@router.post("/adapters/{version}/reject")
async def reject(version: str, operator: Operator, db: Store,
                 adapters: Adapters) -> AdapterOut:
    return await _act(db, adapters, lambda session: registry.set_adapter_status(
        session, version=version, status="rejected", actor=operator.handle,
        actor_id=operator.id))


@router.post("/adapters/{version}/promote")
async def promote(version: str, operator: Operator, db: Store,
                  adapters: Adapters) -> AdapterOut:
    """Make an approved adapter live; the live one retires in the same transaction. It
    is loaded here first: one that does not load (its files do not match the registry's
    checksum, its weights are not finite or do not fit, its smoke test fails) is refused
    with 409 `adapter_unloadable`, and the registry is left as it was."""
    await adapters.admit(version)
    return await _act(db, adapters, lambda session: registry.promote(
        session, version=version, actor=operator.handle, actor_id=operator.id))


@router.post("/adapters/rollback")
async def rollback(operator: Operator, db: Store, adapters: Adapters) -> AdapterOut:
    """Bring back the previously live adapter, in one call; refused with 409
    `adapter_unloadable`, like a promotion, if it no longer loads."""
    await adapters.admit(None)
    return await _act(db, adapters, lambda session: registry.rollback(
        session, actor=operator.handle, actor_id=operator.id))


@router.put("/adapters/{version}/traffic")
async def set_traffic(version: str, body: TrafficIn, operator: Operator,
                      db: Store, adapters: Adapters) -> AdapterOut:
    """A canary: this share of default traffic goes to a candidate or approved adapter
    (refused with 409 `adapter_unloadable`, like a promotion, if it does not load)."""
    if body.share > 0:
        await adapters.admit(version)
    def change(session):
        adapter = registry.set_traffic_share(session, version=version, share=body.share)
        registry.record_audit_event(session, actor=operator.handle, actor_id=operator.id,
                                    action="traffic", adapter_version=version,
                                    detail={"share": body.share})
        return adapter
    return await _act(db, adapters, change)


@router.get("/training-runs")
def list_runs(_: Operator, db: Store, kind: RunKind | None = None,
              status: RunStatus | None = None,
              limit: int = Query(50, ge=1, le=500)) -> list[RunOut]:
    with session_scope(db) as session:
        return [RunOut.model_validate(r, from_attributes=True)
                for r in runs.list_runs(session, kind=kind, status=status, limit=limit)]
