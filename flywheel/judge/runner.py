"""The judge at work: it finds turns to judge in the store, judges them and votes
through the server's own routes with a judge's API key, as an annotator would.

A turn with two or more answers gets a side-by-side verdict on its first two answers
(`POST /api/comparisons` with a choice; a pair whose two orders disagree is a tie); a
turn with one answer gets a thumb (`PUT /api/messages/{id}/rating`). A parse failure
casts no vote, so the turn is judged again by a later pass over the backlog.
"""

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine

from feedback.db import session_scope
from feedback.models import Role
from feedback.queries.annotators import annotator_quality
from feedback.queries.judging import TurnToJudge, newest_judged_prompt_id, turns_to_judge
from flywheel.errors import FlywheelError
from flywheel.judge.rubric import conversation_text
from flywheel.judge.verdicts import JudgeStats, Verdict, judge_pair, judge_single


@dataclass
class JudgeRunner:
    """Judges turns of the store at `engine` and votes at `server` with `api_key`, which
    must be a judge's. `share` of the turns are judged (a stable choice per turn). `http`
    is the HTTP client to use (default: a new one for `server`)."""

    judge: object
    engine: Engine
    server: str
    api_key: str
    share: float = 1.0
    stats: JudgeStats = field(default_factory=JudgeStats)
    votes: Counter = field(default_factory=Counter)
    http: httpx.Client | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise FlywheelError(f"--share must be in (0, 1], not {self.share}")
        if self.http is None:
            self.http = httpx.Client(base_url=self.server.rstrip("/"), timeout=60.0,
                                     trust_env=False)
        me = self._call("GET", "/api/me")
        if me["role"] != Role.judge:
            raise FlywheelError(
                f"the API key is {me['handle']!r}'s, a {me['role']}, not a judge's: create "
                "one with `flywheel users create NAME --role judge`")
        self.judge_id, self.handle = me["id"], me["handle"]
        self.after_id: int | None = None

    def run_pass(self, *, backlog: bool = False, limit: int = 100) -> int:
        """Judge up to `limit` turns: new ones (after the newest this judge has judged),
        or with `backlog` every one it has not judged. Returns how many were judged."""
        with session_scope(self.engine) as session:
            if self.after_id is None or backlog:
                self.after_id = 0 if backlog else newest_judged_prompt_id(
                    session, judge_id=self.judge_id)
            turns = turns_to_judge(session, judge_id=self.judge_id, after_id=self.after_id,
                                   limit=limit, chosen=self._chosen)
        for turn in turns:
            self._judge(turn)
            self.after_id = max(self.after_id, turn.prompt_message_id)
        return len(turns)

    def report(self) -> dict:
        """What the judge did, and how its votes measure up against people's (the same
        annotator-quality row as anyone's: `GET /api/annotators`)."""
        with session_scope(self.engine) as session:
            row = next((a for a in annotator_quality(session).annotators
                        if a.user_id == self.judge_id), None)
        agreement = None if row is None else {
            "consensus_agreement": row.consensus_agreement,
            "consensus_items": row.consensus_items,
            "reward_model_agreement": row.reward_model_agreement,
            "reward_model_items": row.reward_model_items,
            "pattern": row.pattern, "weight": row.weight}
        return {"judge": getattr(self.judge, "name", str(self.judge)), "handle": self.handle,
                **self.stats.summary(), "votes": dict(self.votes),
                "agreement_with_people": agreement}

    def close(self) -> None:
        self.http.close()

    def _chosen(self, prompt_id: int) -> bool:
        if self.share >= 1.0:
            return True
        digest = hashlib.sha256(f"{self.handle}:{prompt_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def _judge(self, turn: TurnToJudge) -> None:
        prompt = conversation_text([{"role": m.role, "content": m.content}
                                    for m in turn.prompt])
        if len(turn.answer_ids) >= 2:
            verdict = judge_pair(self.judge, prompt, turn.answers[0], turn.answers[1],
                                 self.stats)
            if verdict is not None:
                self._call("POST", "/api/comparisons", json={
                    "prompt_message_id": turn.prompt_message_id,
                    "candidate_ids": turn.answer_ids[:2], "choice": str(verdict)})
                self.votes["pick"] += 1
        else:
            verdict = judge_single(self.judge, prompt, turn.answers[0], self.stats)
            if verdict is not None:
                thumb = 1 if verdict == Verdict.good else -1
                self._call("PUT", f"/api/messages/{turn.answer_ids[0]}/rating",
                           json={"thumb": thumb})
                self.votes["thumb"] += 1

    def _call(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self.http.request(
                method, path, headers={"Authorization": f"Bearer {self.api_key}"}, **kwargs)
        except httpx.HTTPError as e:
            raise FlywheelError(f"the server at {self.server} is unreachable: {e}") from None
        if not response.is_success:
            raise FlywheelError(f"{method} {path} answered {response.status_code}: "
                                f"{response.text[:300]}")
        return response.json()
