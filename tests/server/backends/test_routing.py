"""The gateway's routing, on fake backends: the least-loaded backend that is up and holds
the adapter; one that fails before the first token is skipped for another; one that
fails mid-answer ends it with a retryable 503; a backend that comes back is reconciled
before it takes traffic."""

import asyncio

import pytest

from server.backends import BackendUnavailable
from server.backends.gateway import Gateway
from server.engine import Finished, Token
from server.errors import APIError
from server.sampling import SamplingParams

PARAMS = SamplingParams(max_tokens=2)


class FakeBackend:
    def __init__(self, name: str, *, adapters=(), outstanding: int = 0, fail_after=None):
        self.name, self.adapters, self.outstanding = name, set(adapters), outstanding
        self.up, self.healthy, self.fail_after = True, True, fail_after
        self.queued, self.served, self.base_model = 0, 0, "base"

    async def generate(self, prompt_ids, params, adapter=None):
        self.served += 1
        if self.fail_after == 0:
            raise BackendUnavailable(f"{self.name} refused the connection")
        yield Token(self.name)
        if self.fail_after == 1:
            raise BackendUnavailable(f"{self.name} broke off")
        yield Finished("length", self.name, 3, 1)

    async def check(self) -> bool:
        return self.healthy


def _answer(gateway: Gateway, adapter=None) -> list:
    async def run():
        return [e async for e in gateway.generate([1, 2, 3], PARAMS, adapter)]
    return asyncio.run(run())


def test_the_least_loaded_backend_holding_the_adapter_answers() -> None:
    busy, idle, other = (FakeBackend("busy", adapters={"p1"}, outstanding=3),
                         FakeBackend("idle", adapters={"p1"}, outstanding=1),
                         FakeBackend("other", outstanding=0))
    gateway = Gateway([busy, idle, other])
    assert _answer(gateway, "p1")[-1].text == "idle"
    assert _answer(gateway)[-1].text == "other"  # the base model: any backend
    idle.up = False
    assert _answer(gateway, "p1")[-1].text == "busy"
    assert [b.outstanding for b in (busy, idle, other)] == [3, 1, 0]  # all released


def test_no_backend_for_the_request_is_a_retryable_503() -> None:
    gateway = Gateway([FakeBackend("a", adapters={"p1"})])
    with pytest.raises(APIError) as refused:
        _answer(gateway, "p2")
    assert (refused.value.status, refused.value.code) == (503, "backend_unavailable")
    assert "holds the adapter p2" in refused.value.message
    gateway.backends[0].up = False
    with pytest.raises(APIError, match="none of the 1 generation backends is up"):
        _answer(gateway, "p1")


def test_a_backend_failing_before_the_first_token_is_skipped_for_another() -> None:
    dead, alive = FakeBackend("dead", fail_after=0), FakeBackend("alive", outstanding=1)
    gateway = Gateway([dead, alive])
    events = _answer(gateway)
    assert [type(e) for e in events] == [Token, Finished] and events[-1].text == "alive"
    assert not dead.up and alive.up


def test_a_backend_failing_mid_answer_ends_it_with_a_retryable_503() -> None:
    broken, spare = FakeBackend("broken", fail_after=1), FakeBackend("spare", outstanding=1)
    gateway = Gateway([broken, spare])
    with pytest.raises(APIError) as refused:
        _answer(gateway)
    assert (refused.value.status, refused.value.code) == (503, "backend_unavailable")
    assert refused.value.headers == {"Retry-After": "1"}
    assert spare.served == 0  # streamed text cannot be taken back: no silent retry
    assert not broken.up and broken.outstanding == 0


def test_a_backend_that_comes_back_is_reconciled_before_it_takes_traffic() -> None:
    joined = []

    async def on_join(backend) -> None:
        assert not backend.up  # no traffic while it is being reconciled
        joined.append(backend.name)
        backend.adapters = {"p1"}

    back = FakeBackend("back")
    back.up = False
    gateway = Gateway([back], on_join=on_join)
    asyncio.run(gateway.check_all())
    assert joined == ["back"] and back.up and back.adapters == {"p1"}
    asyncio.run(gateway.check_all())
    assert joined == ["back"]  # up already: not reconciled again

    back.healthy = False
    asyncio.run(gateway.check_all())
    assert not back.up
