"""Closed-loop benchmark: the whole flywheel learning a preference from a simulated crowd.

    python bench/loop.py [--votes 2000] [--minutes 30] [--careless 0.0] [--adversarial 0.0]
                         [--preference flywheel.simulate.preferences:kindness] [--seed 0]

`flywheel up` runs on the demo model in a fresh data directory, with auto-promotion on and
the cycle recipe in `CYCLE` (sized for two CPU cores). The crowd (`flywheel.simulate`)
chats and votes through the server's real websocket and REST API in rounds of about
`--round-votes` votes; the scheduler starts a cycle once a round's votes are in, and the
next round waits for that cycle to end, so each round's users meet the newest live adapter.
It stops before a round would take it past `--votes` votes, or at `--minutes` minutes.

With `--ai-judge module:function` (e.g. flywheel.judge.functions:kindness_80), a judge
(`flywheel.judge`, a user with role judge) judges `--ai-judge-share` of the turns as they
come, voting through the same routes; its votes are AI feedback, weighted by its measured
agreement with the crowd (each cycle's record holds its weight then), their share of the
training pairs capped at `--ai-feedback-max-share`.

Then every promoted adapter is judged side by side against the base model on `--judge`
fresh prompts: both answer (sampled as the server samples, temperature 0.7) and the
preference picks; a tie counts half. Prints one JSON line:

  curve               per promoted version: win_rate (vs base, by the preference), its
                      95% interval, mean preference score, kl_to_base (nats per answer,
                      from the cycle's evaluation), votes_used (votes in the store when its
                      cycle read them), minutes (since the crowd started)
  final_version       the live adapter at the end: the last promoted one, else "base"
  final_win_rate      its win rate (0.5 for the base)   (target >= 0.90 ...
  kl_cap, final_kl    ... with its KL under the cap, within 2,000 votes and 30 minutes)
  votes, minutes, cycles, promoted, crowd (the crowd's own figures)
"""

import argparse
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from feedback.db import open_store, session_scope
from feedback.queries import adapters as registry
from feedback.queries import runs, users
from flywheel.adapter_store import AdapterStore
from flywheel.api_keys import hash_api_key, new_api_key
from flywheel.judge.functions import FunctionJudge
from flywheel.judge.runner import JudgeRunner
from flywheel.model_loading import load_model
from flywheel.simulate import run_crowd
from flywheel.simulate.preferences import load_preference

# The cycle's recipe for the demo model on two cores: the demo's chats are ~30 tokens, its
# answers ~16; PPO takes large, few steps. KL_CAP is the promotion gate's (the default
# FLYWHEEL_AUTO_PROMOTE_MAX_KL): a candidate further from the base, measured as users are
# served (temperature 0.7), is not promoted. PPO's own hard stop, on one rollout's KL at
# temperature 1, is looser: a warm-started adapter's single-batch estimate swings by
# several nats, and a stop at the very first step would leave the cycle nothing to learn.
# β is 0.2 because the KL-regularised optimum is π_ref · exp(r / β): at β = 0.05 a reward
# one unit higher outweighs e^20 in base probability, so PPO chases words sprinkled where
# the base never puts them, past the gate's cap (bench/RESULTS.md, "Closed loop").
KL_CAP = 5.0
CYCLE = {
    "min_pairs": 20, "prompt_limit": 64,
    "reward": {"max_length": 64, "batch_size": 16, "epochs": 1},
    "ppo": {"steps": 40, "batch_size": 32, "minibatch_size": 16, "ppo_epochs": 2,
            "learning_rate": 5e-4, "max_new_tokens": 24, "beta": 0.2, "kl_cap": 15.0},
    "dpo": {"steps": 40, "prompts_per_step": 16, "answers_per_prompt": 4, "batch_size": 16,
            "learning_rate": 1e-3, "max_new_tokens": 24, "max_length": 96, "kl_cap": 15.0},
    "eval": {"max_prompts": 32, "max_new_tokens": 24},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--round-votes", type=int, default=330)
    parser.add_argument("--careless", type=float, default=0.0)
    parser.add_argument("--adversarial", type=float, default=0.0)
    parser.add_argument("--preference", default="flywheel.simulate.preferences:kindness")
    parser.add_argument("--judge", type=int, default=256, help="prompts per side-by-side judgement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("ppo", "dpo", "online_dpo"), default="ppo",
                        help="the cycle's policy method")
    parser.add_argument("--recipe", type=json.loads, default={},
                        help='JSON merged into the cycle recipe by section, e.g. '
                             '\'{"ppo": {"beta": 0.01}}\'')
    parser.add_argument("--data-dir", type=Path, help="keep the run here (default: a temp dir)")
    parser.add_argument("--ai-judge", help="a judge function (module:function) voting too")
    parser.add_argument("--ai-judge-share", type=float, default=1.0,
                        help="share of turns the judge judges")
    parser.add_argument("--ai-feedback-max-share", type=float, default=0.25,
                        help="cap on the judge's share of training pairs")
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="flywheel-loop-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    recipe = {**CYCLE, "method": args.method}
    for name, value in args.recipe.items():
        recipe[name] = {**recipe.get(name, {}), **value} if isinstance(value, dict) else value
    (data_dir / "cycle.json").write_text(json.dumps(recipe))
    port = _free_port()
    server = _start_up(data_dir, port, min_feedback=int(args.round_votes * 0.9),
                       ai_feedback_max_share=args.ai_feedback_max_share)
    url = f"http://127.0.0.1:{port}"
    judging = None
    try:
        _wait_healthy(url, server)
        engine = open_store(f"sqlite:///{(data_dir / 'flywheel.db').resolve()}")
        if args.ai_judge:
            judging = AIJudge(engine, url, args.ai_judge, share=args.ai_judge_share)
        started, votes, cycles, crowd = time.monotonic(), 0, [], []
        deadline = started + args.minutes * 60
        round_no = 0
        users = 15  # a round: 15 users, each `turns` turns; about one vote a turn
        turns = max(1, math.ceil(args.round_votes / users))
        while votes + args.round_votes <= args.votes and time.monotonic() < deadline:
            report = run_crowd(url, users=users, turns=turns, preference=args.preference,
                               seed=args.seed * 1000 + round_no, careless=args.careless,
                               adversarial=args.adversarial, side_by_side=0.5,
                               calibration=0.1, follow_up=0.0)
            summary = report.summary()
            crowd.append(summary)
            votes += sum(summary["votes"].values())
            round_no += 1
            print(f"round {round_no}: {votes} votes, {(time.monotonic() - started) / 60:.1f} min",
                  file=sys.stderr, flush=True)
            cycle = _wait_for_cycle(engine, after=len(cycles), deadline=deadline)
            if cycle is not None:
                cycle["minutes"] = round((time.monotonic() - started) / 60, 2)
                if judging is not None:
                    cycle["judge"] = judging.runner.report()["agreement_with_people"]
                cycles.append(cycle)
                print(f"  cycle {cycle['run_id']}: {cycle['status']} {cycle['version']} "
                      f"promoted={cycle['promoted']}", file=sys.stderr, flush=True)
        minutes = (time.monotonic() - started) / 60
    finally:
        if judging is not None:
            judging.stop()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()

    used = 0
    for cycle in cycles:  # votes in the store when each cycle read them
        used += cycle["new_votes"]
        cycle["votes_used"] = used
    promoted = [c for c in cycles if c["promoted"]]
    curve = _judge(data_dir, promoted, load_preference(args.preference), n=args.judge,
                   seed=args.seed)
    # With nothing promoted the base model stays live: it ties with itself, at no KL.
    final = curve[-1] if curve else {"version": "base", "win_rate": 0.5, "kl_to_base": 0.0}
    print(json.dumps({
        "curve": curve, "final_version": final["version"], "final_win_rate": final["win_rate"],
        "final_kl": final["kl_to_base"],
        "kl_cap": KL_CAP, "votes": votes, "minutes": round(minutes, 2), "cycles": len(cycles),
        "promoted": len(promoted), "careless": args.careless, "adversarial": args.adversarial,
        "preference": args.preference, "recipe": recipe,
        "ai_judge": judging.runner.report() if judging is not None else None,
        "crowd": {"turns": sum(c["turns"] for c in crowd),
                  "errors": sum(c["errors"] for c in crowd),
                  "turns_per_s": [c["turns_per_s"] for c in crowd]},
        "cycle_runs": [{k: c[k] for k in ("run_id", "status", "version", "promoted", "minutes",
                                          "votes_used", "reward_accuracy", "reward_margin_low",
                                          "rm_win_rate", "rm_win_rate_low", "kl_to_base",
                                          "judge") if k in c}
                       for c in cycles],
        "data_dir": str(data_dir)}))


class AIJudge:
    """A function judge that judges new turns every second, in a thread of its own."""

    def __init__(self, engine, url: str, function: str, *, share: float) -> None:
        key = new_api_key()
        with session_scope(engine) as session:
            users.create_user(session, handle="ai-judge", role="judge",
                              api_key_hash=hash_api_key(key))
        self.runner = JudgeRunner(FunctionJudge(function), engine, url, key, share=share)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ai-judge", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.runner.run_pass(limit=1000)
            self.stopping.wait(1.0)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)


def _start_up(data_dir: Path, port: int, *, min_feedback: int,
              ai_feedback_max_share: float) -> subprocess.Popen:
    env = {**os.environ, "FLYWHEEL_AI_FEEDBACK_MAX_SHARE": str(ai_feedback_max_share),
           "FLYWHEEL_DATA_DIR": str(data_dir), "FLYWHEEL_PORT": str(port),
           "FLYWHEEL_AUTO_PROMOTE": "true", "FLYWHEEL_AUTO_PROMOTE_MAX_KL": str(KL_CAP),
           "FLYWHEEL_CYCLE_INTERVAL_S": "5", "FLYWHEEL_CYCLE_MIN_FEEDBACK": str(min_feedback),
           "FLYWHEEL_CYCLE_CONFIG": str(data_dir / "cycle.json"),
           "FLYWHEEL_SIDE_BY_SIDE_SHARE": "0.5", "FLYWHEEL_MAX_NEW_TOKENS": "24",
           "FLYWHEEL_RATE_LIMIT_PER_MINUTE": "100000", "FLYWHEEL_ADAPTER_POLL_S": "1"}
    log = (data_dir / "server.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "flywheel", "up"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 300) -> None:
    """The first start builds and teaches the demo model: allow it a few minutes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"flywheel up exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("flywheel up did not become healthy")


def _wait_for_cycle(engine, *, after: int, deadline: float) -> dict | None:
    """The next cycle run once it has ended (None when time runs out first)."""
    while time.monotonic() < deadline:
        with session_scope(engine) as session:
            done = [r for r in reversed(runs.list_runs(session, kind="cycle"))
                    if r.status != "running"]
            if len(done) > after:
                run = done[after]
                promoted = run.adapter_version is not None and any(
                    e.action == "promote" for e in registry.list_audit_events(
                        session, adapter_version=run.adapter_version))
                report = (registry.get_adapter(session, version=run.adapter_version).eval_report
                          if run.adapter_version else {})
                window = run.data_window.get("new_feedback", {})
                judged = report.get("reward_model_win_rate") or {}  # the gate's figures
                return {"run_id": run.id, "status": run.status, "version": run.adapter_version,
                        "promoted": promoted, "new_votes": sum(window.values()),
                        "kl_to_base": report.get("kl_to_base"),
                        "reward_accuracy": run.metrics.get("reward", {}).get("accuracy"),
                        "reward_margin_low": (report.get("reward_model_heldout") or {}
                                              ).get("margin_low"),
                        "rm_win_rate": judged.get("rate"), "rm_win_rate_low": judged.get("low")}
        time.sleep(2)
    return None


@torch.no_grad()
def _judge(data_dir: Path, promoted: list[dict], preference, *, n: int,
           seed: int) -> list[dict]:
    """Each promoted adapter against the base, side by side on the same fresh prompts."""
    loaded = load_model("demo", models_dir=data_dir / "models", device="cpu")
    tokenizer, store = loaded.tokenizer, AdapterStore(data_dir / "adapters")
    rng, score = random.Random(seed + 7_000), preference.score
    prompts = [preference.prompt(rng) for _ in range(n)]
    model = loaded.model
    base_answers = _sample(model, tokenizer, prompts, seed=1)
    base_scores = [score(p, a) for p, a in zip(prompts, base_answers, strict=True)]
    curve = []
    for cycle in promoted:
        model = store.load(model, cycle["version"], adapter_name=f"v{cycle['run_id']}")
        model.set_adapter(f"v{cycle['run_id']}")
        answers = _sample(model, tokenizer, prompts, seed=2)
        scores = [score(p, a) for p, a in zip(prompts, answers, strict=True)]
        wins = [1.0 if a > b else 0.5 if a == b else 0.0
                for a, b in zip(scores, base_scores, strict=True)]
        rate = sum(wins) / n
        half = 1.96 * math.sqrt(max(rate * (1 - rate), 1e-9) / n)
        curve.append({"version": cycle["version"], "win_rate": round(rate, 3),
                      "interval": [round(rate - half, 3), round(rate + half, 3)],
                      "mean_score": round(sum(scores) / n, 3),
                      "base_mean_score": round(sum(base_scores) / n, 3),
                      "kl_to_base": cycle["kl_to_base"], "votes_used": cycle["votes_used"],
                      "minutes": cycle["minutes"]})
    return curve


def _sample(model, tokenizer, prompts: list[str], *, seed: int) -> list[str]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                           add_generation_prompt=True, tokenize=False)
             for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    out = model.generate(**batch, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                         max_new_tokens=24, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
