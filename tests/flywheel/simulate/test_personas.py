"""Preferences, personas and the client's retry arithmetic, without a server."""

import asyncio
import random

import httpx
import pytest

from flywheel.errors import FlywheelError
from flywheel.simulate import assign_personas, load_preference
from flywheel.simulate.client import Session, TurnFailed, _retry_after
from flywheel.simulate.personas import Persona
from flywheel.simulate.preferences import kindness, kindness_rewrite

KIND = "it is kind and lovely, that is what i think about my cat."
RUDE = "it is rude and awful, that is what i think about my cat."


def test_a_preference_is_module_function_with_optional_helpers():
    pref = load_preference("flywheel.simulate.preferences:kindness")
    assert pref.name == "flywheel.simulate.preferences:kindness"
    assert pref.score("q", KIND) == 2 and pref.score("q", RUDE) == -2
    assert pref.flag("q", RUDE) == "harmful" and pref.flag("q", KIND) is None
    assert pref.prompt(random.Random(0)).startswith("Tell me about ")
    assert load_preference(kindness).rewrite is kindness_rewrite  # a function works too
    bare = load_preference("flywheel.simulate.preferences:length")
    assert bare.rewrite is None and bare.flag is None


def test_the_kindness_rewrite_swaps_unkind_words():
    better = kindness_rewrite("q", RUDE)
    assert kindness("q", better) == 2 and better.endswith("about my cat.")
    assert kindness_rewrite("q", KIND) is None


@pytest.mark.parametrize("spec", ["nothing", "no.such.module:f",
                                  "flywheel.simulate.preferences:nope"])
def test_a_bad_preference_is_one_clear_error(spec):
    with pytest.raises(FlywheelError):
        load_preference(spec)


def test_personas_come_in_the_asked_shares_and_are_fixed_by_the_seed():
    personas = assign_personas(40, careless=0.1, adversarial=0.05, rng=random.Random(3))
    kinds = [p.kind for p in personas]
    assert kinds.count("careless") == 4 and kinds.count("adversarial") == 2
    assert {p.style for p in personas if p.kind == "careless"} == {"always_a", "always_up",
                                                                   "random"}
    assert personas == assign_personas(40, careless=0.1, adversarial=0.05,
                                       rng=random.Random(3))
    with pytest.raises(ValueError):
        assign_personas(3, careless=0.8, adversarial=0.5, rng=random.Random(0))


def test_honest_picks_follow_the_preference_whatever_the_display_order():
    pref = load_preference("flywheel.simulate.preferences:kindness")
    honest = Persona("honest", temperature=0.3, shift=0.0)
    picks = [honest.pick(random.Random(i), pref, "q", KIND, RUDE) for i in range(200)]
    swapped = [honest.pick(random.Random(i), pref, "q", RUDE, KIND) for i in range(200)]
    assert picks.count("a") > 190 and swapped.count("b") > 190
    assert [p == "a" for p in picks] == [s == "b" for s in swapped]  # same draws, same text
    adversary = Persona("adversarial", temperature=0.3, shift=0.0)
    assert adversary.thumb(random.Random(0), pref, "q", KIND) == -1
    assert adversary.thumb(random.Random(0), pref, "q", RUDE) == 1
    clicker = Persona("careless", style="always_a")
    assert {clicker.pick(random.Random(i), pref, "q", RUDE, KIND) for i in range(20)} == {"a"}
    fan = Persona("careless", style="always_up")
    assert {fan.thumb(random.Random(i), pref, "q", RUDE) for i in range(20)} == {1}


def test_noise_and_taste_make_users_disagree_sometimes():
    pref = load_preference("flywheel.simulate.preferences:kindness")
    mild = "it is kind and rude, that is what i think about my cat."
    users = assign_personas(50, careless=0, adversarial=0, rng=random.Random(1))
    thumbs = [u.thumb(random.Random(i), pref, "q", mild) for i, u in enumerate(users)]
    assert 5 < thumbs.count(1) < 45


def test_retry_after_from_a_header_or_a_message():
    assert _retry_after("3") == 3.0
    assert _retry_after("rate limit: 60 answers a minute; retry in 17 s") == 17.0
    assert _retry_after("the server is at capacity; retry shortly") == 2.0
    assert _retry_after(None) == 2.0


def test_rest_calls_wait_out_429_and_503():
    asyncio.run(_rest_calls_wait_out_429_and_503())


async def _rest_calls_wait_out_429_and_503():
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}, json={}),
                    httpx.Response(503, headers={"Retry-After": "0"}, json={}),
                    httpx.Response(200, json={"id": 1})])
    session = Session("http://test", timeout_s=5, max_retries=3, rng=random.Random(0))
    session.http = httpx.AsyncClient(base_url="http://test",
                                     transport=httpx.MockTransport(lambda _: next(answers)))
    assert await session.request("PUT", "/api/messages/1/rating", {"thumb": 1}) == {"id": 1}
    assert session.counters.retries == 2
    session.http = httpx.AsyncClient(base_url="http://test", transport=httpx.MockTransport(
        lambda _: httpx.Response(422, json={"error": {"message": "bad thumb"}})))
    with pytest.raises(TurnFailed, match="bad thumb"):
        await session.request("PUT", "/api/messages/1/rating", {"thumb": 2})
    await session.close()
