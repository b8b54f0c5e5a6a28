"""A judge's win rate for a candidate adapter: its answers against the baseline's, each
pair judged in both orders, beside the reward model's win rate in the eval report."""

from dataclasses import asdict

from sqlalchemy import Engine

from feedback.db import session_scope
from feedback.queries.adapters import get_adapter, set_eval_report
from feedback.stats import win_rate
from flywheel.errors import FlywheelError
from flywheel.judge.verdicts import JudgeStats, Verdict, judge_pair


def judge_win_rate(judge, prompts: list[str], candidate: list[str], baseline: list[str], *,
                   seed: int = 0) -> dict:
    """The candidate's win rate over the baseline by `judge` (ties count half), with a
    bootstrap interval, the position-flip rate and what judging cost."""
    stats = JudgeStats()
    verdicts = [judge_pair(judge, p, c, b, stats)
                for p, c, b in zip(prompts, candidate, baseline, strict=True)]
    wins, losses = verdicts.count(Verdict.a), verdicts.count(Verdict.b)
    ties = verdicts.count(Verdict.tie)
    return {"judge": getattr(judge, "name", str(judge)),
            **asdict(win_rate(wins, losses, ties, seed=seed)),
            "wins": wins, "losses": losses, "ties": ties, **stats.summary()}


def judge_candidate(judge, engine: Engine, *, version: str) -> dict:
    """Judge the answer pairs kept in `version`'s eval report and store the judge's win
    rate in it (`judge_win_rate`). Returns that section."""
    with session_scope(engine) as session:
        report = get_adapter(session, version=version).eval_report
    samples = (report or {}).get("samples") or []
    if not samples:
        raise FlywheelError(f"{version} has no evaluation samples to judge")
    section = judge_win_rate(judge, [s["prompt"] for s in samples],
                             [s["candidate"] for s in samples],
                             [s["baseline"] for s in samples])
    with session_scope(engine) as session:
        current = dict(get_adapter(session, version=version).eval_report or {})
        set_eval_report(session, version=version,
                        report={**current, "judge_win_rate": section})
    return section
