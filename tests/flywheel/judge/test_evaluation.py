"""A judge's win rate for a candidate: from its evaluation samples, stored in its report."""

import pytest

from feedback.db import session_scope
from feedback.queries.adapters import get_adapter, register_adapter, set_eval_report
from flywheel.errors import FlywheelError
from flywheel.judge.evaluation import judge_candidate, judge_win_rate
from flywheel.judge.functions import FunctionJudge, agreeing

KIND = "it is kind and wonderful."
UNKIND = "it is rude and stupid."
PERFECT = FunctionJudge(agreeing("flywheel.simulate.preferences:kindness", 1.0))


def test_wins_losses_and_ties():
    judged = judge_win_rate(PERFECT, ["q1", "q2", "q3", "q4"], [KIND, KIND, UNKIND, KIND],
                            [UNKIND, UNKIND, KIND, KIND])
    assert (judged["wins"], judged["losses"], judged["ties"]) == (2, 1, 1)
    assert judged["rate"] == pytest.approx(2.5 / 4) and judged["n"] == 4
    assert judged["low"] <= judged["rate"] <= judged["high"]
    assert judged["calls"] == 8 and judged["position_flip_rate"] == 0.0
    first = judge_win_rate(FunctionJudge("flywheel.judge.functions:always_a"), ["q"], [KIND],
                           [UNKIND])
    assert first["ties"] == 1 and first["position_flip_rate"] == 1.0


def test_a_candidates_samples_are_judged_into_its_report(engine):
    samples = [{"prompt": f"q{i}", "candidate": KIND, "baseline": UNKIND,
                "candidate_reward": 1.0, "baseline_reward": 0.0} for i in range(3)]
    with session_scope(engine) as s:
        for version in ("policy-v1", "policy-v2"):
            register_adapter(s, version=version, base_model="demo", path="/x",
                             sha256="0" * 64, status="candidate")
        set_eval_report(s, version="policy-v1", report={"samples": samples, "kl_to_base": 1})
    judged = judge_candidate(PERFECT, engine, version="policy-v1")
    assert judged["rate"] == 1.0 and judged["wins"] == 3
    with session_scope(engine) as s:
        report = get_adapter(s, version="policy-v1").eval_report
    assert report["judge_win_rate"] == judged and report["kl_to_base"] == 1
    with pytest.raises(FlywheelError, match="no evaluation samples"):
        judge_candidate(PERFECT, engine, version="policy-v2")
