"""Rewrites: the user's improved version of an answer (demonstration data)."""

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlmodel import Session

from feedback.models import Rewrite
from feedback.queries import conversations as convs
from feedback.queries import votes
from server.auth import CallerId
from server.deps import MetricsDep
from server.store import Records, RowId

router = APIRouter(prefix="/api/messages", tags=["rewrites"])


class RewriteIn(BaseModel):
    content: str = Field(min_length=1, max_length=32_000)


class RewriteOut(RewriteIn):
    id: int
    message_id: int


@router.post("/{message_id}/rewrites", status_code=201)
async def rewrite(message_id: RowId, body: RewriteIn, user_id: CallerId, records: Records,
                  metrics: MetricsDep) -> RewriteOut:
    def store(session: Session) -> Rewrite:
        convs.get_message(session, message_id=message_id, user_id=user_id)
        return votes.add_rewrite(session, message_id=message_id, user_id=user_id,
                                 content=body.content)
    stored = await records.run(store)
    metrics.votes.labels("rewrite").inc()
    return RewriteOut.model_validate(stored, from_attributes=True)
