"""A simulated crowd against a real server on the demo model: every kind of vote stored
through the real API, one seed one run, refusals for load waited out, and the command."""

import json

import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from feedback.db import session_scope
from feedback.models import Comparison, Flag, Rating, Rewrite, User
from flywheel.cli import app as cli
from flywheel.simulate import run_crowd
from server.errors import APIError

pytestmark = pytest.mark.slow
PREFERENCE = "tests.flywheel.simulate.prefs:fussy"


def _count(app, model, *where) -> int:
    with session_scope(app.state.db) as session:
        return session.exec(select(func.count()).select_from(model).where(*where)).one()


def test_a_crowd_stores_every_kind_of_vote(app, live):
    before = {m: _count(app, m) for m in (Rating, Comparison, Rewrite, Flag)}
    report = run_crowd(live.url, users=6, turns=8, preference=PREFERENCE, seed=1,
                       careless=0.2, adversarial=0.2, side_by_side=0.4, max_tokens=6)
    figures = report.summary()
    assert figures["turns"] == 48 and figures["errors"] == 0
    assert figures["personas"]["careless"]["users"] == 1
    assert figures["personas"]["adversarial"]["users"] == 1
    votes = figures["votes"]
    assert min(votes.values()) > 0, votes
    assert _count(app, Rating) - before[Rating] == votes["thumb"]
    assert _count(app, Comparison, Comparison.choice.is_not(None)) - before[Comparison] \
        == votes["pick"]
    assert _count(app, Rewrite) - before[Rewrite] == votes["rewrite"]
    assert _count(app, Flag) - before[Flag] == votes["flag"]
    with session_scope(app.state.db) as session:
        handles = {u.id: u.handle for u in session.exec(select(User))}
    for user in report.users:  # the server knows each user only as an anonymous session
        assert handles[user.user_id] == user.handle and user.handle.startswith("anon-")
    assert figures["turns_per_s"] > 0


def test_the_same_seed_makes_the_same_run(live):
    def actions(seed: int) -> list:
        report = run_crowd(live.url, users=3, turns=5, preference=PREFERENCE, seed=seed,
                           concurrency=1, side_by_side=0.5, calibration=0.4, max_tokens=6)
        return [(u.persona, u.style, u.actions) for u in report.users]

    first = actions(7)
    assert actions(7) == first
    assert actions(8) != first


def test_calibration_prompts_give_different_users_the_same_answers(live):
    report = run_crowd(live.url, users=4, turns=4, preference=PREFERENCE, seed=3,
                       calibration=1.0, side_by_side=0.0, careless=0, adversarial=0,
                       max_tokens=6)
    answers: dict[str, set[str]] = {}
    prompts = {a[2]: a[3] for u in report.users for a in u.actions if a[1] == "ask"}
    for user in report.users:
        asked = [a for a in user.actions if a[1] == "ask"]
        rated = [a for a in user.actions if a[1] == "thumb"]
        for ask, thumb in zip(asked, rated, strict=True):
            answers.setdefault(ask[2], set()).add(thumb[3])
    assert len(prompts) < 4 * 4  # a few calibration prompts, asked again and again
    assert all(len(texts) == 1 for texts in answers.values()), answers


def test_refusals_for_load_are_waited_out(app, live, monkeypatch):
    refusals = [APIError(429, "rate limit: 60 answers a minute; retry in 1 s",
                         code="rate_limit_exceeded", headers={"Retry-After": "1"}),
                APIError(503, "the server is at capacity; retry shortly", code="overloaded",
                         headers={"Retry-After": "2"})]
    real_check = app.state.rate_limiter.check

    def check(user_id: int, *, address: str | None = None, cost: int = 1) -> None:
        if refusals:
            raise refusals.pop(0)
        real_check(user_id, address=address, cost=cost)

    monkeypatch.setattr(app.state.rate_limiter, "check", check)
    report = run_crowd(live.url, users=1, turns=3, preference=PREFERENCE, seed=0,
                       max_tokens=4)
    figures = report.summary()
    assert (figures["turns"], figures["errors"], figures["retries"]) == (3, 0, 2)
    assert figures["elapsed_s"] >= 3  # 1 s, then 2 s


def test_the_command_prints_one_json_line_and_users_quality_a_table(app, live, tmp_path):
    runner = CliRunner()
    out = tmp_path / "crowd.json"
    result = runner.invoke(cli, ["simulate", "--url", live.url, "--users", "3", "--turns",
                                 "2", "--preference", PREFERENCE, "--max-tokens", "4",
                                 "--report", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["turns"] == 6 and set(figures["votes"]) == {"pick", "thumb", "rewrite",
                                                              "flag"}
    full = json.loads(out.read_text())
    assert [u["persona"] for u in full["annotators"]].count("honest") >= 1

    db = str(app.state.db.url.render_as_string(hide_password=False))
    table = runner.invoke(cli, ["users", "quality", "--db", db])
    assert table.exit_code == 0, table.output
    assert full["annotators"][0]["handle"] in table.stdout
    assert "reward model: (none measured yet)" in table.stdout

    unreachable = runner.invoke(cli, ["simulate", "--url", "http://127.0.0.1:9", "--users",
                                      "1", "--turns", "1"])
    assert unreachable.exit_code == 2
    assert unreachable.stderr.startswith("error: cannot reach the server")
