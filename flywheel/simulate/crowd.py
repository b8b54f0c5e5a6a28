"""A crowd of simulated users driving a running server through its real API.

    from flywheel.simulate import run_crowd
    report = run_crowd("http://127.0.0.1:8000", users=20, turns=10, seed=0)
    report.summary()        # the figures `flywheel simulate` prints as one JSON line
    report.users            # each user's id and handle on the server, and its persona

Each user (`flywheel.simulate.personas`) runs its turns one after another; up to
`concurrency` users run at once. A turn asks a question (the preference's prompts), in a
new conversation or, sometimes, following up on the last answer; asks for a side-by-side
answer in a share of turns (the server may make others side by side itself); then votes:
a pick on a side-by-side turn, else a thumb, a rewrite of some disliked answers and a flag
on the worst.

A share of turns (`calibration`) asks one of a few fixed calibration prompts in a new
conversation with a fixed sampling seed, so different users get the same answers and
judge the same items: what annotator quality measures consensus on.

Deterministic: the seed fixes the personas and, per user, what it asks (prompts, seeds,
side-by-side requests) and how it votes on given answers. Against a server in the same
state that decides no side-by-side turns of its own, the same seed repeats the same run.
"""

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import httpx
import websockets

from flywheel.errors import FlywheelError
from flywheel.simulate.client import Session, TurnFailed
from flywheel.simulate.personas import Persona, assign_personas
from flywheel.simulate.preferences import Preference, Score, load_preference

DEFAULT_PREFERENCE = "flywheel.simulate.preferences:kindness"
CALIBRATION_PROMPTS = 8
CALIBRATION_SEED = 20_240_601  # fixed, so calibration answers coincide across runs too
CONNECTION_ERRORS = (OSError, httpx.HTTPError, websockets.WebSocketException)


@dataclass
class UserReport:
    """One simulated user: who it is on the server (its persona stays client-side)."""

    index: int
    persona: str
    style: str | None
    user_id: int | None = None
    handle: str | None = None
    turns: int = 0
    votes: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    retries: int = 0
    actions: list[tuple] = field(default_factory=list)  # (turn, what, detail), in order


@dataclass
class CrowdReport:
    preference: str
    seed: int
    elapsed_s: float
    users: list[UserReport]

    def summary(self) -> dict:
        """Figures: turns, votes by kind, errors, retries, elapsed seconds, turns per
        second, and users, turns and votes per persona."""
        votes: Counter[str] = Counter()
        personas: dict[str, Counter[str]] = {}
        for user in self.users:
            votes.update(user.votes)
            persona = personas.setdefault(user.persona, Counter())
            persona.update(users=1, turns=user.turns, votes=sum(user.votes.values()))
        turns = sum(u.turns for u in self.users)
        return {"users": len(self.users), "turns": turns,
                "votes": {k: votes[k] for k in ("pick", "thumb", "rewrite", "flag")},
                "errors": sum(u.errors for u in self.users),
                "retries": sum(u.retries for u in self.users),
                "elapsed_s": round(self.elapsed_s, 3),
                "turns_per_s": round(turns / self.elapsed_s, 3) if self.elapsed_s else 0.0,
                "personas": {k: dict(v) for k, v in sorted(personas.items())},
                "preference": self.preference, "seed": self.seed}

    def to_dict(self) -> dict:
        return {**self.summary(), "annotators": [asdict(u) for u in self.users]}


@dataclass
class _Crowd:
    url: str
    preference: Preference
    turns: int
    side_by_side: float
    calibration: float
    follow_up: float
    max_tokens: int | None
    timeout_s: float
    max_retries: int
    calibration_prompts: list[str]
    on_progress: Callable[[int, int | None], None] | None
    total: int
    done: int = 0

    def progressed(self) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


def run_crowd(url: str, *, users: int = 10, turns: int = 10,
              preference: str | Score = DEFAULT_PREFERENCE, seed: int = 0,
              careless: float = 0.1, adversarial: float = 0.05, concurrency: int = 32,
              side_by_side: float = 0.3, calibration: float = 0.2, follow_up: float = 0.3,
              max_tokens: int | None = None, timeout_s: float = 120.0, max_retries: int = 20,
              on_progress: Callable[[int, int | None], None] | None = None) -> CrowdReport:
    """Run `users` simulated users for `turns` turns each against the server at `url`
    (http://host:port) and report what they did. `preference` is `module:function` or a
    function `(prompt, answer) -> score`; `careless` and `adversarial` are the shares of
    such users; `side_by_side`, `calibration` and `follow_up` are shares of turns (module
    doc); `max_tokens` caps answers (default: the server's). Raises FlywheelError when the
    server cannot be reached. Call `crowd(...)` instead from inside an event loop."""
    return asyncio.run(crowd(
        url, users=users, turns=turns, preference=preference, seed=seed, careless=careless,
        adversarial=adversarial, concurrency=concurrency, side_by_side=side_by_side,
        calibration=calibration, follow_up=follow_up, max_tokens=max_tokens,
        timeout_s=timeout_s, max_retries=max_retries, on_progress=on_progress))


async def crowd(url: str, *, users: int, turns: int, preference: str | Score, seed: int,
                careless: float, adversarial: float, concurrency: int, side_by_side: float,
                calibration: float, follow_up: float, max_tokens: int | None,
                timeout_s: float, max_retries: int,
                on_progress: Callable[[int, int | None], None] | None) -> CrowdReport:
    """`run_crowd`, for callers already inside an event loop."""
    if users < 1 or turns < 1 or concurrency < 1:
        raise FlywheelError("users, turns and concurrency must be at least 1")
    loaded = load_preference(preference)
    try:
        personas = assign_personas(users, careless=careless, adversarial=adversarial,
                                   rng=random.Random(f"{seed}:personas"))
    except ValueError as e:
        raise FlywheelError(str(e)) from None
    await _check_reachable(url, timeout_s)
    context = _Crowd(url=url, preference=loaded, turns=turns, side_by_side=side_by_side,
                     calibration=calibration, follow_up=follow_up, max_tokens=max_tokens,
                     timeout_s=timeout_s, max_retries=max_retries,
                     calibration_prompts=_calibration_prompts(loaded),
                     on_progress=on_progress, total=users * turns)
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int, persona: Persona) -> UserReport:
        async with slots:
            return await _simulate_user(context, index, persona, seed)

    started = time.perf_counter()
    reports = await asyncio.gather(*(one(i, p) for i, p in enumerate(personas)))
    return CrowdReport(preference=loaded.name, seed=seed,
                       elapsed_s=time.perf_counter() - started, users=list(reports))


async def _simulate_user(ctx: _Crowd, index: int, persona: Persona, seed: int) -> UserReport:
    plan = random.Random(f"{seed}:{index}:plan")  # what to ask: independent of the answers
    judge = random.Random(f"{seed}:{index}:votes")  # how to vote on what came back
    report = UserReport(index=index, persona=persona.kind, style=persona.style)
    session = Session(ctx.url, timeout_s=ctx.timeout_s, max_retries=ctx.max_retries,
                      rng=random.Random(f"{seed}:{index}:waits"))
    attempted = 0
    try:
        await session.open()
        report.user_id, report.handle = session.user_id, session.handle
        conversation = parent = None
        for turn in range(ctx.turns):
            attempted += 1
            try:
                conversation, parent = await _turn(ctx, session, persona, plan, judge, turn,
                                                   conversation, parent, report)
                report.turns += 1
            except TurnFailed as e:
                report.errors += 1
                report.actions.append((turn, "error", str(e)))
            ctx.progressed()
    except (*CONNECTION_ERRORS, TurnFailed) as e:  # the user gives up its remaining turns
        report.errors += 1
        report.actions.append((attempted, "gave_up", str(e) or type(e).__name__))
        for _ in range(ctx.turns - max(attempted - 1, 0)):
            ctx.progressed()
    finally:
        report.votes = dict(session.counters.votes)
        report.retries = session.counters.retries
        await session.close()
    return report


async def _turn(ctx: _Crowd, session: Session, persona: Persona, plan: random.Random,
                judge: random.Random, turn: int, conversation: int | None,
                parent: int | None, report: UserReport) -> tuple[int, int | None]:
    if plan.random() < ctx.calibration:
        prompt = plan.choice(ctx.calibration_prompts)
        seed, conversation = _calibration_seed(prompt), None
    else:
        prompt, seed = ctx.preference.prompt(plan), plan.randrange(2**31 - 1)
        if plan.random() >= ctx.follow_up:
            conversation = None
    side_by_side = True if plan.random() < ctx.side_by_side else None
    params = {"seed": seed} | ({"max_tokens": ctx.max_tokens} if ctx.max_tokens else {})
    result = await session.turn(prompt, conversation_id=conversation,
                                parent_id=parent if conversation else None,
                                side_by_side=side_by_side, params=params)
    report.actions.append((turn, "ask", prompt, seed, side_by_side))
    votes, pref = session.counters.votes, ctx.preference
    if result.comparison_id is not None:
        a, b = result.answers["a"].text, result.answers["b"].text
        choice = persona.pick(judge, pref, prompt, a, b)
        parent = await session.pick(result.comparison_id, choice)
        votes["pick"] += 1
        # in the answers' terms, not the display order (the server shuffles that)
        picked = {"a": a, "b": b}.get(choice, choice)
        report.actions.append((turn, "pick", picked, *sorted((a, b))))
        return result.conversation_id, parent
    answer = result.answers["a"]
    path = f"/api/messages/{answer.message_id}"
    thumb = persona.thumb(judge, pref, prompt, answer.text)
    await session.request("PUT", f"{path}/rating", {"thumb": thumb})
    votes["thumb"] += 1
    report.actions.append((turn, "thumb", thumb, answer.text))
    if thumb < 0 and (better := persona.rewrite(judge, pref, prompt, answer.text)):
        await session.request("POST", f"{path}/rewrites", {"content": better})
        votes["rewrite"] += 1
        report.actions.append((turn, "rewrite", better))
    if category := persona.flag(judge, pref, prompt, answer.text):
        await session.request("POST", f"{path}/flags", {"category": category})
        votes["flag"] += 1
        report.actions.append((turn, "flag", category))
    return result.conversation_id, answer.message_id


def _calibration_prompts(preference: Preference) -> list[str]:
    rng, prompts = random.Random(CALIBRATION_SEED), []
    for _ in range(100 * CALIBRATION_PROMPTS):
        prompt = preference.prompt(rng)
        if prompt not in prompts:
            prompts.append(prompt)
            if len(prompts) == CALIBRATION_PROMPTS:
                break
    return prompts


def _calibration_seed(prompt: str) -> int:
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:7], 16)


async def _check_reachable(url: str, timeout_s: float) -> None:
    try:
        async with httpx.AsyncClient(timeout=min(timeout_s, 10.0)) as client:
            response = await client.get(url.rstrip("/") + "/healthz")
    except httpx.HTTPError as e:
        raise FlywheelError(f"cannot reach the server at {url}: {e}") from None
    if response.status_code != 200:
        raise FlywheelError(f"{url}/healthz answered {response.status_code}; is it Flywheel?")
