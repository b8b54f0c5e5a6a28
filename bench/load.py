"""Load benchmark: a crowd voting at once, streams generating, and an oversized request,
through the real server (`flywheel serve`, a subprocess on 127.0.0.1, the demo model) on
SQLite or PostgreSQL. Prints one JSON line of figures.

    python bench/load.py [--db sqlite|postgresql] [--voters 100] [--streams 16]
                         [--models-dir DIR]  # reuse a built demo model

Each voter is an anonymous browser (its own session cookie): one chat turn through
`/v1/chat/completions` with two answers, then `--rounds` rounds of votes on those answers
through the REST routes (two ratings, a ranking, a rewrite, a flag; later rounds change
the ratings and add more), all voters voting at once. Meanwhile `--streams` clients stream
answers back to back, a poller calls `/healthz` every 50 ms, and, once the votes start,
the oversized request of issue 11 (199 alternating long user and short assistant turns,
about 0.8 MB, no key) is sent again and again for `--oversized-s` seconds. PostgreSQL runs
in a throwaway database on `--pg` (dropped afterwards). Everything is bounded: every
request times out (60 s), votes not started by `--deadline-s` are counted as failed, and
the run ends when the voters are done.

Figures:
  votes_ok, votes_failed      vote requests answered 2xx / anything else (target: 0 failed)
  vote_failures               the failed ones by status (0: no HTTP answer, -1: not cast
                              before --deadline-s; a request times out after 60 s)
  vote_p50_ms, vote_p99_ms    one vote request (target p99: < 1 s PostgreSQL, < 2 s SQLite)
  turns_ok, turns_failed      the voters' chat turns
  streams_ok, streams_broken  streamed answers completed / broken (target: 0 broken)
  healthz_p50_ms, healthz_p99_ms   every /healthz poll, the whole run (target p99 < 100 ms)
  healthz_oversized_p50_ms, _p99_ms   … of polls sent while an oversized request was open
  oversized_sent, oversized_statuses, oversized_ms_max   the oversized requests
  server_log_errors           ERROR lines in the server's log
  elapsed_s, server_cpu_s, bench_cpu_s, load_average   the run's length, the CPU time the
                              server used in it, the CPU time of the benchmark's own
                              clients, and the machine's load at the end (others count)
"""

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.hotswap import free_port, ms, percentile, start_server  # noqa: E402
from flywheel.demo_model import ensure_demo_model  # noqa: E402
from tests.server.hotswap_fixtures import stream_chat  # noqa: E402

PG = os.environ.get("FLYWHEEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
COOKIE = "flywheel_session"
HEALTHZ_EVERY_S = 0.05


def oversized_body() -> dict:
    """Issue 11's repro: 199 alternating long user and short assistant turns, ~0.8 MB."""
    long = " ".join(f"word{i}" for i in range(1200))[:8000]
    turns = [{"role": "user" if i % 2 == 0 else "assistant",
              "content": long if i % 2 == 0 else "ok"} for i in range(199)]
    return {"model": "demo", "messages": turns, "max_tokens": 8}


class Run:
    """Everything measured, appended to by the tasks of one run."""

    def __init__(self) -> None:
        self.votes: list[tuple[float, int]] = []  # (seconds, status; 0 for none)
        self.turns: list[bool] = []
        self.streams: list[str | None] = []  # each streamed answer's error, if any
        self.healthz: list[tuple[float, float]] = []  # (sent at, seconds)
        self.oversized: list[tuple[float, float, int]] = []  # (sent, answered, status)
        self.errors: list[str] = []
        self.deadline = float("inf")  # votes not cast by then count as failed (status -1)


async def call(http: httpx.AsyncClient, method: str, path: str, body=None) -> httpx.Response:
    response = await http.request(method, path, json=body)
    if COOKIE in response.cookies:  # sent by hand: cookie jars differ on 127.0.0.1
        http.headers["cookie"] = f"{COOKIE}={response.cookies[COOKIE]}"
    return response


async def chat_turn(http: httpx.AsyncClient, i: int, run: Run) -> tuple[int, list[int]] | None:
    """One turn with two answers; returns (prompt message id, answer ids)."""
    try:
        response = await call(http, "POST", "/v1/chat/completions", {
            "model": "demo", "messages": [{"role": "user", "content": f"tell me about cat {i}"}],
            "n": 2, "max_tokens": 8})
        response.raise_for_status()
        answers = [c["message_id"] for c in response.json()["choices"]]
        listed = (await call(http, "GET", "/api/conversations?limit=1")).json()
        detail = (await call(http, "GET", f"/api/conversations/{listed[0]['id']}")).json()
        prompt = next(m["id"] for m in detail["messages"] if m["id"] not in answers
                      and m["role"] == "user")
    except (httpx.HTTPError, KeyError, IndexError, StopIteration, ValueError) as e:
        run.turns.append(False)
        run.errors.append(f"turn: {type(e).__name__}: {e}"[:300])
        return None
    run.turns.append(True)
    return prompt, answers


async def vote(http: httpx.AsyncClient, method: str, path: str, body: dict, run: Run) -> None:
    started = time.perf_counter()
    try:
        status = (await call(http, method, path, body)).status_code
    except httpx.HTTPError as e:
        status = 0
        run.errors.append(f"vote: {type(e).__name__}: {e}"[:300])
    run.votes.append((time.perf_counter() - started, status))


async def voter(url: str, i: int, rounds: int, barrier: asyncio.Barrier, run: Run) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
        try:
            turn = await chat_turn(http, i, run)
        finally:
            await barrier.wait()  # every voter votes at once
        if turn is None:
            return
        prompt, (a, b) = turn
        for r in range(rounds):
            if time.monotonic() > run.deadline:
                run.votes.extend([(0.0, -1)] * 5 * (rounds - r))
                return
            thumb = 1 if r % 2 == 0 else -1
            await vote(http, "PUT", f"/api/messages/{a}/rating",
                       {"thumb": thumb, "reasons": ["helpful"]}, run)
            await vote(http, "PUT", f"/api/messages/{b}/rating", {"thumb": -thumb}, run)
            await vote(http, "POST", "/api/comparisons",
                       {"prompt_message_id": prompt, "ranking": [a, b][::thumb]}, run)
            await vote(http, "POST", f"/api/messages/{a}/rewrites",
                       {"content": f"a kinder answer, take {r}"}, run)
            await vote(http, "POST", f"/api/messages/{b}/flags", {"category": "other"}, run)


async def streamer(url: str, tokens: int, stop: asyncio.Event, run: Run) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as http:
        while not stop.is_set():
            answer = await stream_chat(http, model="demo", max_tokens=tokens)
            run.streams.append(answer.error)


def poll_healthz(url: str, stop: threading.Event, run: Run) -> None:
    """In a thread of its own, so that the benchmark's busy event loop does not delay it."""
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                http.get("/healthz").raise_for_status()
            except httpx.HTTPError as e:
                run.errors.append(f"healthz: {type(e).__name__}: {e}"[:300])
            run.healthz.append((sent, time.monotonic() - sent))
            stop.wait(max(0.0, sent + HEALTHZ_EVERY_S - time.monotonic()))


async def send_oversized(url: str, start: asyncio.Event, seconds: float, run: Run) -> None:
    body = json.dumps(oversized_body()).encode()
    await start.wait()
    until = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as http:
        while time.monotonic() < until:
            sent = time.monotonic()
            try:
                status = (await http.post("/v1/chat/completions", content=body, headers={
                    "content-type": "application/json"})).status_code
            except httpx.HTTPError:
                status = 0
            run.oversized.append((sent, time.monotonic(), status))
            await asyncio.sleep(0.05)


async def drive(url: str, args) -> Run:
    run = Run()
    run.deadline = time.monotonic() + args.deadline_s
    stop, polled = asyncio.Event(), threading.Event()
    voting = asyncio.Event()
    barrier = asyncio.Barrier(args.voters + 1)
    background = [asyncio.create_task(asyncio.to_thread(poll_healthz, url, polled, run)),
                  *[asyncio.create_task(streamer(url, args.tokens, stop, run))
                    for _ in range(args.streams)]]
    oversized = asyncio.create_task(send_oversized(url, voting, args.oversized_s, run))
    voters = [asyncio.create_task(voter(url, i, args.rounds, barrier, run))
              for i in range(args.voters)]
    await barrier.wait()
    voting.set()
    await asyncio.gather(*voters, oversized)
    stop.set()
    polled.set()
    await asyncio.gather(*background)
    return run


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def figures(run: Run, args, log: Path) -> dict:
    latencies = [s for s, status in run.votes if 200 <= status < 300]
    failed = Counter(str(status) for _, status in run.votes if not 200 <= status < 300)
    healthz = [s for _, s in run.healthz]
    during = [s for sent, s in run.healthz if any(
        o_sent <= sent + s and sent <= answered for o_sent, answered, _ in run.oversized)]
    return {
        "bench": "load", "db": args.db, "voters": args.voters, "streams": args.streams,
        "rounds": args.rounds, "votes_ok": len(latencies),
        "votes_failed": sum(failed.values()), "vote_failures": dict(failed),
        "vote_p50_ms": ms(percentile(latencies, 50)), "vote_p99_ms": ms(percentile(latencies, 99)),
        "vote_max_ms": ms(max(latencies, default=None)),
        "turns_ok": sum(run.turns), "turns_failed": run.turns.count(False),
        "streams_ok": run.streams.count(None),
        "streams_broken": sum(error is not None for error in run.streams),
        "healthz_polls": len(healthz), "healthz_p50_ms": ms(percentile(healthz, 50)),
        "healthz_p99_ms": ms(percentile(healthz, 99)),
        "healthz_oversized_polls": len(during),
        "healthz_oversized_p50_ms": ms(percentile(during, 50)),
        "healthz_oversized_p99_ms": ms(percentile(during, 99)),
        "oversized_sent": len(run.oversized),
        "oversized_statuses": dict(Counter(str(status) for *_, status in run.oversized)),
        "oversized_ms_max": ms(max((a - s for s, a, _ in run.oversized), default=None)),
        "server_log_errors": sum(" ERROR " in line for line in log.read_text().splitlines()),
        "first_error": run.errors[0] if run.errors else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg", default=PG, help="a PostgreSQL server to make a database on")
    parser.add_argument("--voters", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 5 votes each")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of each stream")
    parser.add_argument("--oversized-s", type=float, default=5.0)
    parser.add_argument("--deadline-s", type=float, default=300.0,
                        help="votes not started by then count as failed (-1)")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where the demo model is (built there if missing); default: "
                        "built afresh for the run")
    args = parser.parse_args()

    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT") if args.db != "sqlite" else None
    name = f"flywheel_load_{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="flywheel-load-") as tmp:
        data_dir = Path(tmp)
        models_dir = ensure_demo_model(args.models_dir or data_dir / "models").parent
        if (data_dir / "models") != models_dir:
            (data_dir / "models").symlink_to(models_dir.resolve(), target_is_directory=True)
        if admin is None:
            db_url = f"sqlite:///{data_dir / 'flywheel.db'}"
        else:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            db_url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
        port = free_port()
        process = start_server(data_dir, port, FLYWHEEL_DB=db_url)
        try:
            # The clients' own collector pauses (a full collection walks torch's and the
            # demo model's objects: up to 0.24 s) would be measured as the server's latency.
            gc.collect()
            gc.freeze()
            started, cpu = time.monotonic(), cpu_seconds(process.pid)
            run = asyncio.run(drive(f"http://127.0.0.1:{port}", args))
            elapsed, cpu = time.monotonic() - started, cpu_seconds(process.pid) - cpu
        finally:
            process.terminate()
            process.wait(30)
            if admin is not None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        result = figures(run, args, data_dir / "server.log")
    result.update(elapsed_s=round(elapsed, 1), server_cpu_s=round(cpu, 1),
                  bench_cpu_s=round(cpu_seconds(os.getpid()), 1),
                  load_average=round(os.getloadavg()[0], 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
