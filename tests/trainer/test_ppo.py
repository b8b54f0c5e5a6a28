"""The PPO recipe on a tiny model: one step's logs, seeded reproducibility, the hard KL cap,
the adapter-off reference, the missing-EOS penalty, scores centred on their batch's mean
and warm starts from the adapter store."""

import pytest
import torch

from flywheel.adapter_store import AdapterStore
from tests.fixtures.tiny_models import build_tiny_model, tiny_tokenizer
from trainer.ppo import PPOConfig, prepare_policy, train_ppo
from trainer.rollout import encode_prompt

PROMPTS = [[{"role": "user", "content": f"tell me about thing number {i}"}] for i in range(6)]
SMALL = dict(steps=2, batch_size=4, minibatch_size=2, ppo_epochs=2, max_new_tokens=6,
             learning_rate=1e-2, lora_r=4)
LOG_KEYS = {"step", "score", "reward", "kl", "kl_k3", "beta", "entropy", "response_length",
            "eos_fraction", "policy_loss", "value_loss", "clip_fraction", "value_clip_fraction",
            "approx_kl"}


def length_reward(prompts, completions):
    return torch.tensor([len(c) / 10.0 for c in completions])


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


def run(tokenizer, kind="llama", **overrides):
    config = PPOConfig(**{**SMALL, **overrides})
    policy = prepare_policy(build_tiny_model(kind, tokenizer=tokenizer), config)
    return train_ppo(policy, tokenizer, PROMPTS, length_reward, config), config


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_run_logs_every_figure_each_step(tokenizer, kind):
    result, config = run(tokenizer, kind)
    assert result.stop_reason == "steps" and len(result.metrics) == config.steps
    for step, log in enumerate(result.metrics):
        assert set(log) == LOG_KEYS and log["step"] == step
        assert all(torch.isfinite(torch.tensor(v)) for v in log.values())
        assert 1 <= log["response_length"] <= config.max_new_tokens
        assert 0 <= log["clip_fraction"] <= 1 and log["kl_k3"] >= 0
    first = result.metrics[0]
    assert abs(first["kl"]) < 1e-4 and first["kl_k3"] < 1e-4  # a fresh adapter is the reference
    assert first["entropy"] > 5  # a random model over 30k tokens samples almost uniformly
    assert set(result.timings) == {"generation", "scoring", "update"}
    assert any(p.abs().sum() > 0 for n, p in result.model.named_parameters() if "lora_B" in n)


def test_the_same_seed_reproduces_the_run(tokenizer):
    first, _ = run(tokenizer, seed=3)
    second, _ = run(tokenizer, seed=3)
    other, _ = run(tokenizer, seed=4)
    assert first.metrics == second.metrics
    assert first.metrics != other.metrics


def test_the_reference_is_the_base_model_with_the_adapter_off(tokenizer):
    result, _ = run(tokenizer)
    base = build_tiny_model("llama", tokenizer=tokenizer)
    ids = torch.tensor([encode_prompt(tokenizer, PROMPTS[0], 64)])
    with torch.no_grad():
        with result.model.disable_adapter():
            reference = result.model(input_ids=ids).logits
        trained = result.model(input_ids=ids).logits
        assert torch.equal(reference, base(input_ids=ids).logits)
    assert not torch.allclose(trained, reference)


def test_the_hard_kl_cap_stops_and_restores_the_last_policy_within_it(tokenizer):
    result, _ = run(tokenizer, steps=5, kl_cap=1e-3)
    # step 0 samples from the fresh adapter (KL 0), updates; step 1 is over the cap
    assert result.stop_reason == "kl_cap" and len(result.metrics) == 2
    assert result.metrics[-1]["stopped"] == 1.0 and result.metrics[-1]["kl_k3"] > 1e-3
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)  # back to step 0


def test_answers_without_eos_are_penalised(tokenizer):
    def zero(prompts, completions):
        return torch.zeros(len(completions))

    config = PPOConfig(**{**SMALL, "steps": 1, "missing_eos_penalty": 2.5})
    policy = prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), config)
    log = train_ppo(policy, tokenizer, PROMPTS, zero, config).metrics[0]
    assert log["eos_fraction"] < 1  # a random model rarely says [SEP] in 6 tokens
    assert log["reward"] == pytest.approx(-2.5 * (1 - log["eos_fraction"]), abs=1e-4)  # KL ~ 0


def test_a_constant_added_to_every_score_trains_the_same_policy(tokenizer):
    # Scores are centred on the batch's mean before the critic sees them: a reward 100 above
    # another everywhere (a raw preference, an uncentred reward model) is the same reward.
    def shifted(prompts, completions):
        return length_reward(prompts, completions) + 100.0

    config = PPOConfig(**{**SMALL, "steps": 3})
    results = []
    for reward_fn in (length_reward, shifted):
        policy = prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), config)
        results.append(train_ppo(policy, tokenizer, PROMPTS, reward_fn, config))
    plain, offset = results
    assert [m["score"] + 100 for m in plain.metrics] == pytest.approx(
        [m["score"] for m in offset.metrics])
    for key in ("reward", "value_loss", "response_length"):
        assert [m[key] for m in plain.metrics] == pytest.approx(
            [m[key] for m in offset.metrics], abs=1e-3)
    # Equal up to float rounding, which Adam magnifies on weights whose gradient is ~0.
    weights = dict(offset.model.named_parameters())
    for name, param in plain.model.named_parameters():
        if "lora_B" in name:
            assert (param - weights[name]).norm() <= 1e-3 * param.norm(), name


def test_adaptive_beta_moves_towards_the_target(tokenizer):
    result, _ = run(tokenizer, steps=3, kl_target=1e-3, kl_horizon=10)
    betas = [log["beta"] for log in result.metrics]
    assert betas[0] == PPOConfig.beta
    assert betas[1] < betas[0]  # step 0 has KL 0, under the target
    assert betas[2] > betas[1]  # the trained adapter is far over it


def test_warm_start_from_a_stored_adapter(tokenizer, tmp_path):
    result, config = run(tokenizer)
    store = AdapterStore(tmp_path / "adapters")
    store.save(result.model, "policy-v1")
    policy = prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), config,
                            store=store, warm_start="policy-v1")
    trained = dict(result.model.named_parameters())
    loaded = [(n, p) for n, p in policy.named_parameters() if "lora_" in n]
    assert loaded and all(p.requires_grad for _, p in loaded)
    assert all(torch.equal(p, trained[n]) for n, p in loaded)
    more = train_ppo(policy, tokenizer, PROMPTS, length_reward, config)
    assert more.metrics[0]["kl_k3"] > 1e-3  # it starts away from the reference


def test_prompts_keep_their_end_when_truncated(tokenizer):
    full = encode_prompt(tokenizer, PROMPTS[0], 1000)
    assert encode_prompt(tokenizer, PROMPTS[0], 5) == full[-5:]
    assert tokenizer.decode(full).replace(" ", "").endswith("assistant:")


def test_sampled_log_probs_and_values_match_a_full_forward_pass(tokenizer):
    from trainer.ppo import ValueHead, _forward
    from trainer.rollout import eos_ids, sample

    config = PPOConfig(**SMALL)
    policy = prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), config)
    head = ValueHead(policy.config.hidden_size)
    torch.nn.init.normal_(head.linear.weight)
    rows = [encode_prompt(tokenizer, p, 64) for p in PROMPTS[:3]]
    with torch.no_grad():
        rollout = sample(policy, rows, eos=eos_ids(policy, tokenizer),
                         pad_id=tokenizer.pad_token_id, max_new_tokens=config.max_new_tokens,
                         temperature=config.temperature, generator=torch.Generator(),
                         value_head=head)
        batch = rollout.batch
        full_logprobs, full_values = _forward(policy, head, batch.sequences, batch.attention,
                                              batch.prompt_len, config)
    mask = batch.mask.bool()
    assert rollout.values.shape == rollout.logprobs.shape == batch.mask.shape
    assert torch.allclose(rollout.logprobs[mask], full_logprobs[mask], atol=1e-4)
    assert torch.allclose(rollout.values[mask], full_values[mask], atol=1e-4)


def test_the_run_neither_reads_nor_reseeds_the_process_wide_rng(tokenizer):
    # A server in the same process samples from torch's global generator: training must
    # give the same run whatever state it is in, and must not reset it.
    torch.manual_seed(1)
    first, _ = run(tokenizer, seed=3)
    after_first = torch.rand(4)
    torch.manual_seed(2)
    second, _ = run(tokenizer, seed=3)
    after_second = torch.rand(4)
    assert first.metrics == second.metrics
    assert not torch.equal(after_first, after_second)


def test_the_final_state_warm_starts_the_critic_optimizer_and_adaptive_beta(tokenizer):
    first, config = run(tokenizer, kl_target=0.01, kl_horizon=100)
    state = first.state
    assert state.step == config.steps and state.generators == {} and state.metrics == []
    assert any(v.abs().sum() > 0 for v in state.value_head.values())  # the critic learned
    assert state.optimizer["state"]  # Adam's moments
    policy = first.model  # the next cycle goes on from the trained adapter
    second = train_ppo(policy, tokenizer, PROMPTS, length_reward, config, state=state)
    assert second.metrics[0]["beta"] == pytest.approx(state.beta)
    # The value head starts where the first run's ended, not at zero.
    fresh = train_ppo(prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), config),
                      tokenizer, PROMPTS, length_reward, config)
    assert second.metrics[0]["value_loss"] != fresh.metrics[0]["value_loss"]


def test_a_run_resumed_from_a_checkpoint_ends_as_an_uninterrupted_one(tokenizer):
    overrides = dict(steps=5, checkpoint_every=2, seed=5)
    whole, config = run(tokenizer, **overrides)
    saved = []

    def checkpoint(state):  # what the cycle writes to disk: the state and the adapter
        lora = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" in n}
        saved.append((state, lora))

    policy = prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), config)
    train_ppo(policy, tokenizer, PROMPTS, length_reward, config, checkpoint=checkpoint)
    assert [s.step for s, _ in saved] == [2, 4]
    state, lora = saved[0]  # killed after step 2: a new process starts from the checkpoint
    resumed_policy = prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), config)
    with torch.no_grad():
        for name, param in resumed_policy.named_parameters():
            if name in lora:
                param.copy_(lora[name])
    resumed = train_ppo(resumed_policy, tokenizer, PROMPTS, length_reward, config, state=state)
    assert resumed.metrics == whole.metrics
    for (name, a), b in zip(whole.model.named_parameters(), resumed.model.parameters(),
                            strict=True):
        if "lora_" in name:
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_groups_of_answers_per_prompt_train_without_the_critic(tokenizer):
    seen = []

    def reward(prompts, completions):
        seen.append([p[0]["content"] for p in prompts])
        return length_reward(prompts, completions)

    config = PPOConfig(**{**SMALL, "answers_per_prompt": 2})
    policy = prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), config)
    result = train_ppo(policy, tokenizer, PROMPTS, reward, config)
    assert result.stop_reason == "steps" and len(result.metrics) == config.steps
    for prompts in seen:  # 2 prompts a step, each answered twice, side by side
        assert prompts[0] == prompts[1] and prompts[2] == prompts[3] and prompts[0] != prompts[2]
    # the leave-one-out baseline needs no critic: the value head stays as it started
    assert all(torch.count_nonzero(v) == 0 for v in result.value_head.state_dict().values())
    assert any(p.abs().sum() > 0 for n, p in result.model.named_parameters() if "lora_B" in n)
    with pytest.raises(ValueError, match="whole number of groups"):
        run(tokenizer, answers_per_prompt=3)
