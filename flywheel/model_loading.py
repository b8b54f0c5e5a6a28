"""Load the base model + tokenizer (+ chat template), and pick LoRA targets for it.

`--model` is a local Hugging Face directory, a hub id (read from the local cache when
`HF_HUB_OFFLINE` is set), or `demo` for the built-in demo model.
"""

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import is_offline_mode
from peft import LoraConfig
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TokenizersBackend,
)
from transformers.models.auto.tokenization_auto import get_tokenizer_config
from transformers.pytorch_utils import Conv1D

from flywheel.demo_model import CHAT_TEMPLATE, DEMO_CONFIG_FLAG, ensure_demo_model
from flywheel.errors import FlywheelError

logger = logging.getLogger(__name__)

DEMO_NAME = "demo"
DEFAULT_CONTEXT = 2048  # when neither the config nor the tokenizer states a window
DEMO_NOTICE = (
    "the built-in demo model (a toy that only speaks a little language); "
    "pass --model with a real instruct model for real use"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# LoRA targets by architecture: every linear layer of the transformer blocks (attention and
# MLP), which tunes far better than attention alone at a small cost; embeddings and the LM
# head stay frozen. vLLM's LoRA support covers these names for these architectures.
_LLAMA_STYLE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_GPT2_STYLE = ("c_attn", "c_proj", "c_fc")  # Conv1D layers: weights stored transposed
LORA_TARGETS_BY_MODEL_TYPE: dict[str, tuple[str, ...]] = {
    "llama": _LLAMA_STYLE,
    "mistral": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "qwen3": _LLAMA_STYLE,
    "gemma": _LLAMA_STYLE,
    "gemma2": _LLAMA_STYLE,
    "gpt2": _GPT2_STYLE,
}
_HEAD_NAMES = frozenset({"lm_head", "embed_out", "score", "v_head", "classifier"})


@dataclass
class LoadedModel:
    """A causal LM ready to generate, with its tokenizer."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str  # as given: "demo", a path or a hub id
    device: torch.device
    dtype: torch.dtype
    is_demo: bool
    max_context: int  # the model's context window, in tokens


def default_device() -> str:
    """`cuda` when a GPU is present, else `cpu`."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name_or_path: str, *, models_dir: Path, device: str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer for generation (bf16 on CUDA, float32 on CPU).

    `device` is a torch device ("cpu", "cuda", "cuda:1") or "auto" to shard over all GPUs.
    """
    source, local_only = _resolve_source(name_or_path, models_dir)
    device = device or default_device()
    on_gpu = device == "auto" or device.startswith("cuda")
    dtype = _gpu_dtype() if on_gpu and torch.cuda.is_available() else torch.float32
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        is_demo = bool(getattr(config, DEMO_CONFIG_FLAG, False))
        if is_demo:
            logger.warning("loading %s from %s: %s", name_or_path, source, DEMO_NOTICE)
        else:
            logger.info("loading model %s on %s (%s)", name_or_path, device, dtype)
        tokenizer = _load_tokenizer(source, local_only)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            config=config,
            dtype=dtype,
            device_map=None if device == "cpu" else device,
            local_files_only=local_only,
        )
    except OSError as exc:
        if Path(source).is_dir():  # a local model with a missing or broken file
            raise FlywheelError(f"cannot load model {name_or_path}: {_first_line(exc)}") from exc
        raise FlywheelError(_not_found_message(name_or_path, local_only, exc)) from exc
    except ValueError as exc:  # e.g. an encoder-only architecture
        raise FlywheelError(
            f"cannot load {name_or_path} as a causal language model: {exc}"
        ) from exc
    _prepare_tokenizer(tokenizer, name_or_path)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name_or_path,
        device=model.device,
        dtype=model.dtype,
        is_demo=is_demo,
        max_context=_context_window(config, tokenizer),
    )


def _resolve_source(name_or_path: str, models_dir: Path) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether to stay off the network)."""
    if name_or_path == DEMO_NAME:
        return str(ensure_demo_model(models_dir)), True
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FlywheelError(f"not a Hugging Face model directory (no config.json): {path}")
        return str(path), True
    if _HUB_ID.fullmatch(name_or_path):
        return name_or_path, _hub_offline()
    raise FlywheelError(f"model path not found: {name_or_path}")


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them at import)."""
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return is_offline_mode() or any(f and f.lower() in {"1", "true", "yes", "on"} for f in flags)


def _not_found_message(name: str, local_only: bool, exc: OSError) -> str:
    where = (
        "in the local Hugging Face cache (HF_HUB_OFFLINE is set)" if local_only else "on the hub"
    )
    return (
        f"model path not found: {name} is not a local model directory and was not found {where}"
        f" ({_first_line(exc)})"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _gpu_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _load_tokenizer(source: str, local_only: bool) -> PreTrainedTokenizerBase:
    """AutoTokenizer, except that a tokenizer saved as a plain `TokenizersBackend` loads as one.

    (AutoTokenizer rebuilds the tokenizer of any qwen2 model as byte-level BPE from its vocab,
    which mangles e.g. the WordPiece tokenizer of the tiny test models.)
    """
    declared = get_tokenizer_config(source, local_files_only=local_only).get("tokenizer_class")
    loader = TokenizersBackend if declared == "TokenizersBackend" else AutoTokenizer
    return loader.from_pretrained(source, local_files_only=local_only)


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Pad on the left (for batched generation), pad with eos if needed, ensure a chat template."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise FlywheelError(f"the tokenizer of {name} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        logger.warning("%s has no chat template: using Flywheel's plain 'role: text' one", name)
        tokenizer.chat_template = CHAT_TEMPLATE


def _context_window(config, tokenizer: PreTrainedTokenizerBase) -> int:
    text_config = config.get_text_config()
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(text_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    if 0 < tokenizer.model_max_length < 10**7:  # transformers uses a huge number for "unknown"
        return int(tokenizer.model_max_length)
    return DEFAULT_CONTEXT


def lora_target_modules(model: nn.Module) -> list[str]:
    """Names of the layers LoRA should adapt in this (plain transformers) model.

    Known architectures use `LORA_TARGETS_BY_MODEL_TYPE`; others get every nn.Linear /
    Conv1D layer except the output head.
    """
    layers = _adaptable_layers(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = [n for n in LORA_TARGETS_BY_MODEL_TYPE.get(model_type, ()) if n in layers]
    if not targets:
        targets = sorted(layers)
    if not targets:
        raise FlywheelError(
            f"cannot find layers for LoRA in this model (architecture {model_type!r}): "
            "it has no nn.Linear or Conv1D layers besides its output head"
        )
    return targets


def lora_config(
    model: nn.Module,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    task_type: str = "CAUSAL_LM",
    head: bool = False,
) -> LoraConfig:
    """A LoraConfig for this model; sets `fan_in_fan_out` for GPT-2-style Conv1D layers.

    `head` adapts the output head (the LM head) too. A policy needs it where the blocks
    alone cannot move tokens apart: in a small model whose output embeddings of
    interchangeable words lie close together (the demo's adjectives: cosine 0.95), the
    blocks' LoRA raises every such word at once. It is left out beside Conv1D blocks, whose
    transposed-weight flag peft sets for the whole config."""
    targets = lora_target_modules(model)
    layers = _adaptable_layers(model)
    fan_in_fan_out = any(layers[name] for name in targets)
    if head and not fan_in_fan_out and (name := _output_head_name(model)) is not None:
        targets = [*targets, name]
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type=task_type,
    )


def init_lora_weights(model: nn.Module, *, seed: int) -> None:
    """Draw every LoRA A matrix anew as peft does (Kaiming-uniform; B stays zero, so a fresh
    adapter changes nothing yet), from a generator of its own: the same seed gives the same
    adapter, and the process-wide RNG, which a server in the same process samples from, is
    never reseeded."""
    from peft.tuners.lora import LoraLayer

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in sorted(model.named_modules(), key=lambda item: item[0]):
            if isinstance(module, LoraLayer):
                for name in sorted(module.lora_A):
                    weight = module.lora_A[name].weight
                    fresh = torch.empty(weight.shape, dtype=torch.float32)
                    nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
                    weight.copy_(fresh)


def _output_head(model: nn.Module) -> nn.Module | None:
    return model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None


def _output_head_name(model: nn.Module) -> str | None:
    """The leaf name of the model's output head when it is an nn.Linear, else None."""
    output = _output_head(model)
    if not isinstance(output, nn.Linear):
        return None
    return next(q.rsplit(".", 1)[-1] for q, m in model.named_modules() if m is output)


def _adaptable_layers(model: nn.Module) -> dict[str, bool]:
    """Leaf name -> whether it is a Conv1D, for every nn.Linear / Conv1D outside the heads."""
    output = _output_head(model)
    layers: dict[str, bool] = {}
    for qualified, module in model.named_modules():
        leaf = qualified.rsplit(".", 1)[-1]
        if not isinstance(module, nn.Linear | Conv1D) or module is output or leaf in _HEAD_NAMES:
            continue
        layers[leaf] = layers.get(leaf, False) or isinstance(module, Conv1D)
    return layers


@dataclass
class LoadedTokenizer:
    """A model's tokenizer (+ chat template) and window, without its weights."""

    tokenizer: PreTrainedTokenizerBase
    max_context: int
    is_demo: bool


def load_tokenizer(name_or_path: str, *, models_dir: Path) -> LoadedTokenizer:
    """What a gateway needs of the model its backends serve: it renders the chat prompts
    and counts their tokens; the weights stay on the backends."""
    source, local_only = _resolve_source(name_or_path, models_dir)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        tokenizer = _load_tokenizer(source, local_only)
    except OSError as exc:
        if Path(source).is_dir():
            raise FlywheelError(f"cannot load model {name_or_path}: {_first_line(exc)}") from exc
        raise FlywheelError(_not_found_message(name_or_path, local_only, exc)) from exc
    _prepare_tokenizer(tokenizer, name_or_path)
    return LoadedTokenizer(tokenizer, _context_window(config, tokenizer),
                           bool(getattr(config, DEMO_CONFIG_FLAG, False)))
