"""Hot-swap benchmark: adapter promotions under continuous streaming load, through the real
server (`flywheel serve`, a subprocess) and its operator and OpenAI routes. Prints one JSON
line of figures.

    python bench/hotswap.py [--streams 16] [--adapters 4] [--swaps 10] [--tokens 16]

It prepares `--adapters` LoRA adapters for the demo model (approved; the first one live),
keeps `--streams` clients streaming chat completions without pause, measures a steady
state, then promotes the adapters in turn (`--swaps` promotions, `--gap-s` apart: long
enough for an adapter to drain and unload before its next turn, so most promotions load
it from disk again).

Figures:
  steady_ttft_p50_ms, steady_ttft_p99_ms   time to first token with no swap going on
  swap_ttft_p99_ms        … of requests started while a promotion was under way (from the
                          call to 1 s after its answer)
  swap_ttft_ratio         swap_ttft_p99_ms / steady_ttft_p99_ms            (target <= 1.5)
  swap_phase_ttft_p99_ms  … of every request started from the first promotion to the last
  promote_to_first_token_ms_p50, _p99   the operator's promote call sent → the first token
                          from the new adapter reaches a probe: a 17th client that asks
                          (model "flywheel", 2 tokens) again and again from that moment
                          until the answer's recorded adapter is the new one
  promote_to_first_load_token_ms_p50, _p99   … the same, on any of the load's streams (each
                          asks again only when its previous answer is done)
  promote_call_ms_p50, _p99   the promote call itself (verify + load + smoke test + switch)
  failed_requests         HTTP errors, error events, broken streams, probes included (0)
  mistagged_answers       answers recorded with an adapter that was not live at any moment
                          between the request going out and its response beginning (0)
"""

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from feedback.db import open_store, session_scope  # noqa: E402
from feedback.queries import adapters as registry  # noqa: E402
from flywheel.adapter_store import AdapterStore  # noqa: E402
from flywheel.demo_model import ensure_demo_model  # noqa: E402
from tests.server.hotswap_fixtures import (  # noqa: E402
    AdapterMaker,
    Streamed,
    adapter_tags,
    live_between,
    register,
    stream_chat,
)
from tests.server.support import add_user, bearer  # noqa: E402

POLL_S = 0.5
WINDOW_AFTER_S = 1.0  # a swap's window lasts this long after its promote call answered


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def prepare(data_dir: Path, versions: list[str]) -> tuple[str, str]:
    """The demo model, the adapters (the first live), and a user's and an operator's keys."""
    models_dir = data_dir / "models"
    ensure_demo_model(models_dir)
    maker = AdapterMaker(models_dir)
    store = AdapterStore(data_dir / "adapters")
    db = open_store(f"sqlite:///{data_dir / 'flywheel.db'}")
    try:
        for seed, version in enumerate(versions, start=1):
            register(db, maker.make(store, version, seed=seed),
                     status="live" if seed == 1 else "approved")
        return add_user(db)[1], add_user(db, role="operator", handle="bench-operator")[1]
    finally:
        db.dispose()


def start_server(data_dir: Path, port: int, **settings: str) -> subprocess.Popen:
    """`flywheel serve` on 127.0.0.1 with the demo model, its limits out of the way of a
    benchmark's load; `settings` are more FLYWHEEL_* variables."""
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(data_dir), "FLYWHEEL_MODEL": "demo",
           "FLYWHEEL_RATE_LIMIT_PER_MINUTE": "10000000", "FLYWHEEL_SIDE_BY_SIDE_SHARE": "0",
           "FLYWHEEL_MAX_QUEUE": "1000", "HF_HUB_OFFLINE": "1", **settings}
    log = (data_dir / "server.log").open("w")  # noqa: SIM115 — the server owns it
    process = subprocess.Popen([sys.executable, "-m", "flywheel", "serve", "--host",
                                "127.0.0.1", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False).is_success:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server did not start; see {data_dir / 'server.log'}")


async def probe_until(http: httpx.AsyncClient, db, version: str, probes: list[Streamed]):
    """Ask again and again until an answer comes from `version`; returns when its first
    token arrived."""
    while True:
        probe = await stream_chat(http, max_tokens=2)
        probes.append(probe)
        if probe.error is None and probe.first_token is not None:
            tags = await asyncio.to_thread(adapter_tags, db, [probe.message_id])
            if tags[probe.message_id] == version:
                return probe.first_token


async def run_load(url: str, user_key: str, operator_key: str, versions: list[str], db,
                   args) -> dict:
    """Streams without pause; a steady phase, then the promotions, each followed by a
    probe. Returns every answer, every probe, the swaps (call sent, call answered,
    version), when each swap's probe got its first token from the new adapter, and when
    the steady phase began."""
    answers: list[Streamed] = []
    probes: list[Streamed] = []
    swaps: list[tuple[float, float, str]] = []
    probed: list[float] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=args.streams + 4)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=bearer(user_key), timeout=120,
                                     trust_env=False, limits=limits) as http:
            while not stop.is_set():
                answers.append(await stream_chat(http, max_tokens=args.tokens))

    clients = [asyncio.create_task(client()) for _ in range(args.streams)]
    try:
        await asyncio.sleep(args.warmup_s)
        steady_from = time.monotonic()
        await asyncio.sleep(args.steady_s)
        async with (httpx.AsyncClient(base_url=url, headers=bearer(operator_key),
                                      timeout=120, trust_env=False) as operator,
                    httpx.AsyncClient(base_url=url, headers=bearer(user_key), timeout=120,
                                      trust_env=False) as prober):
            for i in range(args.swaps):
                version = versions[(i + 1) % len(versions)]
                sent = time.monotonic()
                probe = asyncio.create_task(probe_until(prober, db, version, probes))
                response = await operator.post(f"/api/adapters/{version}/promote")
                if response.status_code != 200 or not response.json()["loaded"]:
                    raise SystemExit(f"promoting {version} failed: {response.text}")
                swaps.append((sent, time.monotonic(), version))
                probed.append(await probe - sent)
                await asyncio.sleep(max(0.0, sent + args.gap_s - time.monotonic()))
    finally:
        stop.set()
        await asyncio.gather(*clients)
    return {"answers": answers, "probes": probes, "swaps": swaps, "probed": probed,
            "steady_from": steady_from}


def figures(run: dict, tags: dict, versions: list[str], args) -> dict:
    answers, probes, swaps = run["answers"], run["probes"], run["swaps"]
    swaps_from, swaps_to = swaps[0][0], swaps[-1][1] + WINDOW_AFTER_S
    steady = [a.ttft for a in answers if run["steady_from"] <= a.started and a.finished
              and a.finished < swaps_from and a.ttft]
    windows = [(sent, answered + WINDOW_AFTER_S) for sent, answered, _ in swaps]
    during = [a.ttft for a in answers if a.ttft and any(s <= a.started <= e for s, e in windows)]
    phase = [a.ttft for a in answers if a.ttft and swaps_from <= a.started <= swaps_to]
    load_first = []  # the first token from the new adapter on any of the load's streams
    for sent, _, version in swaps:
        firsts = [a.first_token for a in answers if a.first_token and a.first_token > sent
                  and tags.get(a.message_id) == version]
        if firsts:
            load_first.append(min(firsts) - sent)
    everything = answers + probes
    ok = [a for a in everything if a.error is None]
    mistagged = [a for a in ok if tags.get(a.message_id) not in live_between(
        swaps, versions[0], a.started, a.began)]
    steady_p99, during_p99 = percentile(steady, 99), percentile(during, 99)
    calls = [answered - sent for sent, answered, _ in swaps]
    return {
        "streams": args.streams, "adapters": len(versions), "swaps": len(swaps),
        "tokens": args.tokens, "requests": len(everything),
        "steady_requests": len(steady), "swap_window_requests": len(during),
        "steady_ttft_p50_ms": ms(percentile(steady, 50)), "steady_ttft_p99_ms": ms(steady_p99),
        "swap_ttft_p50_ms": ms(percentile(during, 50)), "swap_ttft_p99_ms": ms(during_p99),
        "swap_ttft_ratio": round(during_p99 / steady_p99, 2) if steady_p99 and during_p99
        else None,
        "swap_phase_ttft_p99_ms": ms(percentile(phase, 99)),
        "promote_to_first_token_ms_p50": ms(percentile(run["probed"], 50)),
        "promote_to_first_token_ms_p99": ms(percentile(run["probed"], 99)),
        "promote_to_first_load_token_ms_p50": ms(percentile(load_first, 50)),
        "promote_to_first_load_token_ms_p99": ms(percentile(load_first, 99)),
        "promote_call_ms_p50": ms(percentile(calls, 50)),
        "promote_call_ms_p99": ms(percentile(calls, 99)),
        "failed_requests": len(everything) - len(ok),
        "mistagged_answers": len(mistagged),
        "first_error": next((a.error for a in everything if a.error), None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens of each answer")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--steady-s", type=float, default=10.0)
    parser.add_argument("--gap-s", type=float, default=2.0, help="between two promotions")
    args = parser.parse_args()
    if args.adapters < 2:
        parser.error("--adapters must be at least 2")
    versions = [f"bench-v{i}" for i in range(1, args.adapters + 1)]

    with tempfile.TemporaryDirectory(prefix="flywheel-hotswap-") as tmp:
        data_dir = Path(tmp)
        user_key, operator_key = prepare(data_dir, versions)
        port = free_port()
        process = start_server(data_dir, port, FLYWHEEL_ADAPTER_POLL_S=str(POLL_S))
        db = open_store(f"sqlite:///{data_dir / 'flywheel.db'}")
        try:
            run = asyncio.run(run_load(f"http://127.0.0.1:{port}", user_key, operator_key,
                                       versions, db, args))
            tags = adapter_tags(db, [a.message_id for a in run["answers"] + run["probes"]
                                     if a.message_id])
            with session_scope(db) as session:
                live = registry.live_adapter(session).version
        finally:
            process.terminate()
            process.wait(30)
            db.dispose()
    result = figures(run, tags, versions, args)
    result["live_at_end"] = live
    print(json.dumps(result))


if __name__ == "__main__":
    main()
