import logging

import pytest
import torch
from peft import get_peft_model
from torch import nn

from flywheel.demo_model import demo_model_path
from flywheel.errors import FlywheelError
from flywheel.model_loading import load_model, lora_config, lora_target_modules
from tests.fixtures.tiny_models import TINY_KINDS, build_tiny_model, tiny_tokenizer

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EXPECTED_TARGETS = {
    "llama": LLAMA_TARGETS,
    "qwen2": LLAMA_TARGETS,
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}
PROMPTS = [
    [{"role": "user", "content": "hello"}],
    [{"role": "user", "content": "tell me a story about a dog and a cat"}],
]


def _generate_batch(loaded, max_new_tokens: int = 3) -> torch.Tensor:
    inputs = loaded.tokenizer.apply_chat_template(
        PROMPTS, add_generation_prompt=True, padding=True, return_tensors="pt"
    ).to(loaded.device)
    out = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + max_new_tokens
    return inputs["input_ids"]


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_loads_tiny_models_for_generation_on_cpu(kind, tiny_model_dirs, tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="flywheel.model_loading"):
        loaded = load_model(str(tiny_model_dirs[kind]), models_dir=tmp_path, device="cpu")

    assert loaded.model.config.model_type == kind
    assert loaded.dtype == torch.float32 and loaded.device == torch.device("cpu")
    assert not loaded.is_demo
    assert loaded.max_context == 256
    assert not loaded.model.training
    assert "demo" not in caplog.text
    # The real WordPiece tokenizer survives loading (AutoTokenizer alone mangles qwen2's).
    assert loaded.tokenizer("hello there")["input_ids"] == [7592, 2045]
    # Left padding: every prompt ends right where generation starts.
    input_ids = _generate_batch(loaded)
    assert input_ids[0, 0] == loaded.tokenizer.pad_token_id
    assert loaded.tokenizer.convert_ids_to_tokens(input_ids[:, -1].tolist()) == [":", ":"]


def test_demo_model_is_labelled_as_a_demo(models_dir, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="flywheel.model_loading"):
        loaded = load_model("demo", models_dir=models_dir)
        by_path = load_model(str(demo_model_path(models_dir)), models_dir=models_dir)

    assert loaded.is_demo and by_path.is_demo
    assert loaded.name == "demo" and loaded.max_context == 512
    records = [r for r in caplog.records if r.name == "flywheel.model_loading"]
    assert len(records) == 2
    assert all(
        r.levelno == logging.WARNING and "built-in demo model" in r.getMessage()
        for r in records
    )
    _generate_batch(loaded)


def test_demo_model_is_written_on_first_use(tmp_path, monkeypatch) -> None:
    # Writing is tested here; teaching (minutes on CPU) in tests/flywheel/test_demo_model.py.
    monkeypatch.setattr("flywheel.demo_model.TEACHING_STEPS", 2)
    loaded = load_model("demo", models_dir=tmp_path / "models", device="cpu")
    assert loaded.is_demo
    assert (tmp_path / "models" / "demo" / "config.json").is_file()


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no-such-model-dir x"])
def test_missing_path_is_one_clear_error(name, tmp_path) -> None:
    with pytest.raises(FlywheelError, match="^model path not found: "):
        load_model(name, models_dir=tmp_path)


def test_uncached_hub_id_offline_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FlywheelError) as excinfo:
        load_model("flywheel-tests/no-such-model", models_dir=tmp_path)
    message = str(excinfo.value)
    assert message.startswith("model path not found: flywheel-tests/no-such-model")
    assert "HF_HUB_OFFLINE" in message and "\n" not in message


def test_directory_without_config_is_refused(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlywheelError, match="no config.json"):
        load_model(str(tmp_path / "empty"), models_dir=tmp_path)


def test_tokenizer_without_chat_template_or_pad_gets_defaults(tmp_path, caplog) -> None:
    tokenizer = tiny_tokenizer(chat_template=False)
    tokenizer.pad_token = None
    build_tiny_model("gpt2", tokenizer=tokenizer).save_pretrained(tmp_path / "bare")
    tokenizer.save_pretrained(tmp_path / "bare")

    with caplog.at_level(logging.WARNING, logger="flywheel.model_loading"):
        loaded = load_model(str(tmp_path / "bare"), models_dir=tmp_path, device="cpu")

    assert "no chat template" in caplog.text
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "[SEP]"
    assert loaded.tokenizer.padding_side == "left"
    _generate_batch(loaded)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_lora_targets_and_config_build_a_working_peft_model(kind) -> None:
    model = build_tiny_model(kind)
    assert lora_target_modules(model) == EXPECTED_TARGETS[kind]
    config = lora_config(model, r=4, alpha=8, dropout=0.0)
    assert config.fan_in_fan_out is (kind == "gpt2")  # GPT-2's Conv1D stores weights transposed
    assert (config.r, config.lora_alpha) == (4, 8)

    peft_model = get_peft_model(model, config)
    adapted = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A")]
    per_layer = {"gpt2": 4, "llama": 7, "qwen2": 7}[
        kind
    ]  # gpt2: attn c_attn/c_proj, mlp c_fc/c_proj
    assert len(adapted) == 2 * per_layer
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([[7592, 2045, 1012]])
    logits = peft_model(input_ids=ids).logits
    assert logits.shape == (1, 3, 30522)
    logits.sum().backward()
    assert all(p.grad is not None for p in peft_model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_a_head_adapter_moves_the_logits_of_chosen_tokens_alone(kind) -> None:
    """With `head`, the LM head gets a LoRA too (not beside GPT-2's Conv1D blocks): it can
    raise one token's logit without moving the hidden state, so the rest stay put."""
    model = build_tiny_model(kind)
    config = lora_config(model, r=4, alpha=8, dropout=0.0, head=True)
    assert ("lm_head" in config.target_modules) is (kind != "gpt2")
    if kind == "gpt2":
        return
    peft_model = get_peft_model(model, config)
    ids = torch.tensor([[7592, 2045, 1012]])
    before = peft_model(input_ids=ids).logits
    head = peft_model.base_model.model.lm_head
    with torch.no_grad():
        head.lora_A["default"].weight.fill_(0.1)
        head.lora_B["default"].weight[2045].fill_(1.0)  # token 2045's row alone
    moved = peft_model(input_ids=ids).logits - before
    assert moved[..., 2045].abs().min() > 0
    others = torch.ones(30522, dtype=torch.bool)
    others[2045] = False
    assert moved[..., others].abs().max() == 0


class _CustomLM(nn.Module):
    def __init__(self, with_linear: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"wq": nn.Linear(8, 8), "wo": nn.Linear(8, 8)})
            for _ in range(2 if with_linear else 0)
        )
        self.lm_head = nn.Linear(8, 10)


def test_unknown_architecture_falls_back_to_its_linear_layers() -> None:
    assert lora_target_modules(_CustomLM()) == ["wo", "wq"]  # lm_head excluded
    assert lora_config(_CustomLM()).fan_in_fan_out is False


def test_unknown_architecture_without_linear_layers_is_refused() -> None:
    with pytest.raises(FlywheelError, match="cannot find layers for LoRA"):
        lora_target_modules(_CustomLM(with_linear=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loads_in_bf16_on_cuda(tiny_model_dirs, tmp_path) -> None:
    loaded = load_model(str(tiny_model_dirs["llama"]), models_dir=tmp_path)
    assert loaded.device.type == "cuda"
    assert loaded.dtype in (torch.bfloat16, torch.float16)
    _generate_batch(loaded)


def test_model_directory_with_broken_weights_is_a_clear_error(tiny_model_dirs, tmp_path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in tiny_model_dirs["llama"].iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    (broken / "model.safetensors").unlink()
    with pytest.raises(FlywheelError, match=r"^cannot load model .*broken: "):
        load_model(str(broken), models_dir=tmp_path, device="cpu")
