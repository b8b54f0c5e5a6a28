"""An acknowledged vote survives the server being killed: `flywheel serve` runs as a real
process, on SQLite and on PostgreSQL, and is SIGKILLed in the middle of a stream."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import select

from feedback.db import open_store, session_scope
from feedback.models import Message, Rating
from tests.server.support import add_user, bearer

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db_url: str, data_dir: Path, models_dir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    (data_dir / "models").symlink_to(models_dir)  # the demo model, already written
    env = {**os.environ, "FLYWHEEL_DB": db_url, "FLYWHEEL_DATA_DIR": str(data_dir),
           "FLYWHEEL_MODEL": "demo", "FLYWHEEL_MAX_NEW_TOKENS": "8", "HF_HUB_OFFLINE": "1"}
    log = (data_dir / "server.log").open("w")  # noqa: SIM115 — the server writes it
    process = subprocess.Popen([sys.executable, "-m", "flywheel", "serve", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", trust_env=False).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"flywheel serve did not start:\n{(data_dir / 'server.log').read_text()}")


def _first_content(lines) -> None:
    for line in lines:
        if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get(
                "content"):
            return
    raise AssertionError("the stream ended before its first token")


def test_an_acknowledged_vote_survives_a_kill_mid_stream(db_url, tmp_path, models_dir) -> None:
    store = open_store(db_url)
    user_id, key = add_user(store)
    store.dispose()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    process, url = _serve(db_url, data_dir, models_dir)
    try:
        with httpx.Client(base_url=url, headers=bearer(key), timeout=60,
                          trust_env=False) as http:
            answer = http.post("/v1/chat/completions", json={
                "model": "flywheel", "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200, answer.text
            message_id = answer.json()["choices"][0]["message_id"]
            vote = http.put(f"/api/messages/{message_id}/rating", json={"thumb": 1})
            assert vote.status_code == 200, vote.text

            with http.stream("POST", "/v1/chat/completions", json={
                    "model": "flywheel", "stream": True, "max_tokens": 400, "temperature": 0,
                    "messages": [{"role": "user", "content": "tell me a long story"}]},
                    ) as stream:
                lines = stream.iter_lines()
                _first_content(lines)
                # Changed while the story streams; acknowledged; then the server dies.
                vote = http.put(f"/api/messages/{message_id}/rating",
                                json={"thumb": -1, "reasons": ["wrong"], "comment": "no"})
                assert vote.status_code == 200, vote.text
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                with pytest.raises(httpx.HTTPError):
                    for _ in lines:
                        pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == -signal.SIGKILL

    store = open_store(db_url)  # as the next server would find it
    try:
        with session_scope(store) as session:
            if store.dialect.name == "sqlite":
                assert session.exec(text("PRAGMA integrity_check")).one()[0] == "ok"
            [rating] = session.exec(select(Rating).where(Rating.message_id == message_id))
            assert (rating.user_id, rating.thumb, rating.reasons, rating.comment) == (
                user_id, -1, ["wrong"], "no")
            assert session.get(Message, message_id).role == "assistant"
    finally:
        store.dispose()
