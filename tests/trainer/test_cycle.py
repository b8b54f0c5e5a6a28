"""The training cycle end to end on the demo model, with tiny settings: feedback in the
store → reward model → PPO → evaluation → a registered candidate."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from feedback.db import open_store, session_scope
from feedback.importer import import_file
from feedback.models import RunKind, RunStatus
from feedback.queries import adapters as registry
from feedback.queries import reward_models, runs
from feedback.queries.annotators import annotator_quality
from feedback.queries.leases import acquire_lease
from flywheel.adapter_store import AdapterStore
from flywheel.settings import Settings
from tests.trainer.synthetic import synthetic_rows
from trainer.checkpoints import checkpoint_path, load_state
from trainer.cycle import LEASE, CycleConfig, promotion_gate, run_cycle
from trainer.evaluate import EvalConfig
from trainer.ppo import PPOConfig
from trainer.reward import RewardConfig, current_reward_model

pytestmark = pytest.mark.slow

TINY = dict(min_new_feedback=10, min_pairs=10, prompt_limit=16,
            reward=RewardConfig(max_length=32, batch_size=8, epochs=1),
            ppo=PPOConfig(steps=1, batch_size=4, minibatch_size=4, ppo_epochs=1,
                          max_new_tokens=4),
            eval=EvalConfig(max_prompts=2, max_new_tokens=4, batch_size=2))


def tiny(**changes) -> CycleConfig:
    return CycleConfig(**{**TINY, **changes})


def make_loop(data_dir: Path, models_dir: Path):
    """Settings and a store holding 40 synthetic preference pairs (and their prompts)."""
    data_dir.mkdir(exist_ok=True)
    data = data_dir / "votes.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in synthetic_rows(40)))
    (data_dir / "models").symlink_to(models_dir)  # the demo model, already written
    settings = Settings(data_dir=data_dir, model="demo")
    engine = open_store(settings.db_url)
    import_file(engine, data)
    return settings, engine


@pytest.fixture
def loop(tmp_path, models_dir):
    settings, engine = make_loop(tmp_path, models_dir)
    yield settings, engine
    engine.dispose()


def test_a_cycle_registers_an_evaluated_candidate(loop):
    settings, engine = loop
    result = run_cycle(settings, engine, tiny())
    assert result.status == "succeeded", result.reason
    with session_scope(engine) as session:
        adapter = registry.get_adapter(session, version=result.adapter_version)
        run = runs.get_run(session, run_id=result.run_id)
    assert adapter.status == "candidate" and adapter.parent_version is None
    report = adapter.eval_report
    assert report["baseline"] == "base" and report["prompts"] >= 1
    assert report["markdown"].startswith("# default vs base") or "vs base" in report["markdown"]
    assert run.status == RunStatus.succeeded and run.adapter_version == adapter.version
    assert {"reward", "ppo", "eval"} <= set(run.metrics)
    assert len(run.metrics["ppo"]["steps"]) == 1
    AdapterStore(settings.adapters_dir).verify(adapter.version)  # stored whole
    with session_scope(engine) as session:  # the reward model it trained, in the registry
        reward_model = reward_models.get_reward_model(session, version="rm-0001")
        events = reward_models.reward_model_audit_events(session, version="rm-0001")
    assert reward_model.status == "current" and adapter.reward_model_version == "rm-0001"
    assert current_reward_model(engine, settings.data_dir) == Path(reward_model.path)
    assert reward_model.heldout["accuracy"] == run.metrics["reward"]["accuracy"]
    assert reward_model.data_window["pairs"] == run.metrics["reward"]["pairs"]
    assert [(e.action, e.actor) for e in events] == [("made_current", "scheduler"),
                                                     ("registered", "scheduler")]
    with session_scope(engine) as session:  # each voter measured against the reward model
        quality = annotator_quality(session)
    assert quality.reward_model == "rm-0001"
    assert all(a.reward_model_agreement is not None for a in quality.annotators)


def test_a_cycle_waits_for_enough_new_feedback(loop):
    settings, engine = loop
    result = run_cycle(settings, engine, tiny(min_new_feedback=1000))
    assert result.status == "skipped" and "waiting for 1000" in result.reason
    with session_scope(engine) as session:
        assert runs.list_runs(session) == []


def test_only_one_cycle_runs_at_a_time(loop):
    settings, engine = loop
    with session_scope(engine) as session:
        assert acquire_lease(session, name=LEASE, holder="another-worker", ttl_s=60)
    result = run_cycle(settings, engine, tiny(), force=True)
    assert result.status == "skipped" and result.reason == "another cycle is running"


def test_a_failing_cycle_is_recorded_and_frees_the_lease(loop):
    settings, engine = loop
    result = run_cycle(settings, engine, tiny(min_pairs=10_000))
    assert result.status == "failed" and "preference pairs" in result.reason
    with session_scope(engine) as session:
        assert runs.get_run(session, run_id=result.run_id).status == RunStatus.failed
        assert acquire_lease(session, name=LEASE, holder="next", ttl_s=60)


def test_the_next_cycle_warm_starts_from_the_live_adapter_and_gated_auto_promotion(loop):
    settings, engine = loop
    first = run_cycle(settings, engine, tiny())
    with session_scope(engine) as session:
        registry.set_adapter_status(session, version=first.adapter_version,
                                    status="approved", actor="test")
        registry.promote(session, version=first.adapter_version, actor="test")
    held = settings.model_copy(update={"auto_promote": True, "auto_promote_min_win_rate": 2})
    second = run_cycle(held, engine, tiny(), force=True)
    with session_scope(engine) as session:
        adapter = registry.get_adapter(session, version=second.adapter_version)
        assert adapter.parent_version == first.adapter_version
        assert adapter.eval_report["baseline"] == first.adapter_version
        assert adapter.status == "candidate"  # the gate held it back
        events = registry.list_audit_events(session, adapter_version=adapter.version)
        assert events[0].action == "gate_failed" and events[0].actor == "scheduler"
        retrained = reward_models.get_reward_model(session, version="rm-0002")
        in_use = reward_models.current_reward_model(session).version
        assert retrained.parent_version == "rm-0001"  # warm-started from it
        assert in_use == ("rm-0002" if retrained.status == "current" else "rm-0001")
        assert adapter.reward_model_version == in_use == adapter.eval_report["reward_model"]
    open_gate = settings.model_copy(update={"auto_promote": True,
                                            "auto_promote_min_win_rate": 0,
                                            "auto_promote_min_win_rate_low": -1,
                                            "auto_promote_max_kl": 1e9,
                                            "auto_promote_max_degenerate": 2})
    third = run_cycle(open_gate, engine, tiny(), force=True)
    with session_scope(engine) as session:
        assert registry.live_adapter(session).version == third.adapter_version


KILLABLE = """
import sys
from feedback.db import open_store
from flywheel.settings import Settings
from tests.trainer.test_cycle import tiny
from trainer.cycle import run_cycle
from trainer.ppo import PPOConfig
settings = Settings(data_dir=sys.argv[1], model="demo")
run_cycle(settings, open_store(settings.db_url),
          tiny(lease_ttl_s=2.0, ppo=PPOConfig(steps=10_000, batch_size=4, minibatch_size=4,
                                              ppo_epochs=1, max_new_tokens=4,
                                              checkpoint_every=100_000)))
"""
# No checkpoint before the kill: a run killed with one is resumed, not failed (the next test).
# With the default of 10 steps, a fast machine wrote one between two polls.


def test_a_worker_killed_mid_ppo_leaves_nothing_half_made(loop):
    settings, engine = loop
    root = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen([sys.executable, "-c", KILLABLE, str(settings.data_dir)],
                              cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # until PPO has taken a step
            with session_scope(engine) as session:
                running = runs.list_runs(session, kind=RunKind.cycle, status=RunStatus.running)
            if running and running[0].metrics.get("ppo", {}).get("steps"):
                break
            assert worker.poll() is None, "the worker ended before PPO started"
            time.sleep(0.5)
        else:
            pytest.fail("PPO never started")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert not checkpoint_path(settings.data_dir, running[0].id).exists()
    with session_scope(engine) as session:
        assert registry.list_adapters(session) == []
    assert AdapterStore(settings.adapters_dir).list_versions() == []

    time.sleep(2.5)  # the dead worker's lease expires
    result = run_cycle(settings, engine, tiny(), force=True)
    assert result.status == "succeeded", result.reason
    with session_scope(engine) as session:
        killed = runs.get_run(session, run_id=running[0].id)
        assert killed.status == RunStatus.failed and "stopped mid-cycle" in killed.error


RESUMABLE = """
import sys
from feedback.db import open_store
from flywheel.settings import Settings
from tests.trainer.test_cycle import resumable
from trainer.cycle import run_cycle
settings = Settings(data_dir=sys.argv[1], model="demo")
run_cycle(settings, open_store(settings.db_url), resumable())
"""


def resumable() -> CycleConfig:
    return tiny(lease_ttl_s=2.0, ppo=PPOConfig(steps=8, checkpoint_every=2, batch_size=4,
                                               minibatch_size=4, ppo_epochs=1,
                                               max_new_tokens=4))


def test_a_cycle_killed_mid_ppo_resumes_from_its_checkpoint_to_the_same_adapter(
        tmp_path, models_dir):
    from safetensors.torch import load_file

    def adapter_weights(settings, version):
        return load_file(AdapterStore(settings.adapters_dir).path(version)
                         / "adapter_model.safetensors")

    whole_settings, whole_engine = make_loop(tmp_path / "whole", models_dir)
    whole = run_cycle(whole_settings, whole_engine, resumable())
    assert whole.status == "succeeded", whole.reason
    settings, engine = make_loop(tmp_path / "killed", models_dir)
    root = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen([sys.executable, "-c", RESUMABLE, str(settings.data_dir)],
                              cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # until a checkpoint holds a step or more
            saved = load_state(checkpoint_path(settings.data_dir, 1))
            if saved is not None and saved[0].step >= 2:
                break
            assert worker.poll() is None, "the worker ended before its first checkpoint"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint was written")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    killed_at = load_state(checkpoint_path(settings.data_dir, 1))[0].step
    assert killed_at < 8

    time.sleep(2.5)  # the dead worker's lease expires
    resumed = run_cycle(settings, engine, resumable())
    assert resumed.status == "succeeded" and resumed.run_id == 1, resumed.reason
    steps = resumed.metrics["ppo"]["steps"]
    assert [s["step"] for s in steps] == list(range(8))
    assert steps == whole.metrics["ppo"]["steps"]
    assert not checkpoint_path(settings.data_dir, 1).exists()
    ours, theirs = (adapter_weights(settings, resumed.adapter_version),
                    adapter_weights(whole_settings, whole.adapter_version))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    engine.dispose()
    whole_engine.dispose()


@pytest.mark.parametrize("method", ["dpo", "online_dpo"])
def test_a_cycle_by_another_method_names_it_in_the_candidates_report(loop, method):
    from trainer.dpo import DPOConfig

    settings, engine = loop
    dpo = DPOConfig(epochs=1, steps=1, prompts_per_step=2, answers_per_prompt=2, batch_size=4,
                    max_new_tokens=4, max_length=64)
    result = run_cycle(settings, engine, tiny(method=method, dpo=dpo))
    assert result.status == "succeeded", result.reason
    with session_scope(engine) as session:
        report = registry.get_adapter(session, version=result.adapter_version).eval_report
    assert report["method"] == method and report["parent"] is None
    assert report["reward_model"] == "rm-0001" and method in result.metrics
    assert not (settings.data_dir / "training-state" / f"{result.adapter_version}.pt").exists()


def _report(rate: float, low: float, kl: float = 1.0, degenerate: float = 0.0,
            margin_low: float | None = 0.2) -> dict:
    return {"reward_model_win_rate": {"rate": rate, "low": low, "high": 1.0, "n": 64},
            "kl_to_base": kl, "empty_rate": 0.0, "degenerate_rate": degenerate,
            "reward_model_heldout": {"accuracy": 0.63, "margin_low": margin_low, "pairs": 19}}


@pytest.mark.parametrize(("report", "passes"), [
    (_report(0.906, 0.83), True),
    (_report(0.578, 0.45), False),  # a higher figure, but as likely worse as better
    (_report(0.53, 0.51), False),  # sure, but not by enough
    (_report(0.594, 0.5), False),  # the interval reaches a coin toss
    (_report(0.906, 0.83, kl=5.3), False),
    (_report(0.906, 0.83, degenerate=0.2), False),
    # the reward model that trained it and judged it agrees with the voters by chance only
    (_report(0.984, 0.95, margin_low=-0.003), False),
    (_report(0.906, 0.83, margin_low=None), False),  # it had no held-out pairs to show it
])
def test_the_gate_wants_a_candidate_better_with_confidence(report, passes) -> None:
    passed, gate = promotion_gate(Settings(), report)
    assert passed is passes
    assert (gate["win_rate"], gate["win_rate_low"], gate["pairs"]) == (
        report["reward_model_win_rate"]["rate"], report["reward_model_win_rate"]["low"], 64)


def test_the_reward_models_check_can_be_turned_off() -> None:
    off = Settings(auto_promote_min_reward_margin_low=float("-inf"))
    assert promotion_gate(off, _report(0.906, 0.83, margin_low=None))[0]
    passed, gate = promotion_gate(off, _report(0.906, 0.83, margin_low=-0.5))
    assert passed and gate["reward_margin_low"] == -0.5
