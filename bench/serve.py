"""Serving benchmark: the real server, driven through its OpenAI API by the openai SDK,
against the same model's in-process `generate`. Prints one JSON line of figures.

    python bench/serve.py [--model demo] [--tokens 64] [--rounds 3] [--streams 1,4,16]
                          [--no-hf-serve]

--model takes what `flywheel serve --model` takes, or `qwen2-0.5b`: Qwen2.5-0.5B's
architecture (24 layers, 896 wide, grouped-query attention) built from its config with
random weights and the demo's tokenizer (30,522 tokens instead of 151,936: 0.39B
parameters), so a GPU run measures a real model's shape with nothing to download:

    python bench/serve.py --model qwen2-0.5b --streams 1,16,64

Figures (medians over rounds, measured side by side in one run):
  generate_tps            in-process `model.generate`, one sequence
  server_tps_1            one stream through the server (streaming SSE)
  single_stream_ratio     server_tps_1 / generate_tps                  (target >= 0.9)
  server_tps_N            aggregate tokens/s with N concurrent streams (--streams: 4, 16)
  scaling_Nx              server_tps_N / server_tps_1                  (target >= 4 at 16)
  generate_batchN_tps     in-process batched `generate` of N, for scale
  ttft_p50_ms, ttft_p99_ms   time to first token over every stream
  server_peak_rss_mb      the server process's peak resident memory
  hf_serve_tps_N          the same, through `transformers serve` on the same model
  hf_serve_cb_tps_*       …with its continuous batching (`--continuous-batching`)
  hf_serve_*scaling_Nx    their N streams / one stream
  *answer_tokens          mean tokens per answer over every stream (each answer runs to
                          --tokens: vLLM's `ignore_eos` for Flywheel, no EOS id in
                          the request's generation config for `transformers serve`)
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import torch
import transformers

from flywheel.demo_model import build_demo_tokenizer
from flywheel.model_loading import load_model

PROMPT = [{"role": "user", "content": "Tell me a story about a lighthouse keeper."}]

# Models built from a published config (random weights): the shape is what costs time.
SHAPES = {"qwen2-0.5b": {
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 2048,
    "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}}


def build_shaped_model(name: str, models_dir: Path) -> str:
    """The directory of model `name` from SHAPES, written once (bf16 weights)."""
    path = models_dir / name
    if not (path / "config.json").exists():
        tokenizer = build_demo_tokenizer()
        config = transformers.Qwen2Config(
            **SHAPES[name], vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = transformers.AutoModelForCausalLM.from_config(config)
        model.to(torch.bfloat16).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(process: subprocess.Popen, url: str) -> subprocess.Popen:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server behind {url} did not start")


def start_transformers_serve(model_dir: Path, port: int, continuous: bool,
                             log: Path) -> subprocess.Popen:
    # The CLI beside this interpreter (a virtual environment need not be on PATH).
    beside = Path(sys.executable).parent / "transformers"
    command = [str(beside) if beside.exists() else "transformers", "serve", str(model_dir),
               "--port", str(port), "--device",
               "cpu", "--continuous-batching" if continuous else "--no-continuous-batching"]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                               stdout=subprocess.DEVNULL, stderr=log.open("w"))
    return wait_healthy(process, f"http://127.0.0.1:{port}/health")


def start_server(model: str, data_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(data_dir), "FLYWHEEL_MODEL": model,
           "FLYWHEEL_RATE_LIMIT_PER_MINUTE": "100000", "FLYWHEEL_SIDE_BY_SIDE_SHARE": "0",
           "FLYWHEEL_MAX_QUEUE": "1000", "HF_HUB_OFFLINE": "1"}
    log = (data_dir / "server.log").open("w")  # noqa: SIM115 — the server owns it
    process = subprocess.Popen([sys.executable, "-m", "flywheel", "serve", "--port",
                                str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    return wait_healthy(process, f"http://127.0.0.1:{port}/healthz")


async def stream_once(client: openai.AsyncOpenAI, model: str, tokens: int, seed: int,
                      extra_body: dict):
    """One streamed completion; returns (completion tokens, seconds to first token).
    Tokens come from the usage chunk, or count content chunks where there is none."""
    started, first, usage, chunks = time.perf_counter(), None, 0, 0
    stream = await client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=tokens, seed=seed, temperature=1.0,
        stream=True, stream_options={"include_usage": True}, extra_body=extra_body)
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        elif chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            if first is None:
                first = time.perf_counter() - started
    return usage or chunks, first


FULL_LENGTH = {"ignore_eos": True}  # vLLM's sampling extension, which Flywheel speaks


async def server_round(base_url: str, streams: int, tokens: int, key: str = "",
                       model: str = "flywheel", extra_body: dict = FULL_LENGTH):
    """Aggregate tokens/s of `streams` concurrent answers, their times to first token, and
    their lengths in tokens."""
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key or "unused",
                                  timeout=600, max_retries=0) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*[stream_once(client, model, tokens, seed, extra_body)
                                         for seed in range(streams)])
        elapsed = time.perf_counter() - started
    lengths = [n for n, _ in results]
    return sum(lengths) / elapsed, [t for _, t in results if t is not None], lengths


def hf_full_length(loaded, tokens: int) -> dict:
    """`transformers serve`'s way to the same answer lengths: a generation config (a JSON
    string in the request) that samples `tokens` tokens with no end-of-text token (-1 is
    no token; its continuous batching ignores `min_new_tokens`)."""
    config = loaded.model.generation_config.to_diff_dict()
    config.update(do_sample=True, max_new_tokens=tokens, eos_token_id=[-1])
    return {"generation_config": json.dumps(config)}


def generate_tps(loaded, tokens: int, batch: int) -> float:
    ids = loaded.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
    inputs = {k: v.repeat(batch, 1).to(loaded.device) for k, v in ids.items()}
    started = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens,
                                    do_sample=True, temperature=1.0,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
    return batch * (out.shape[1] - inputs["input_ids"].shape[1]) / (
        time.perf_counter() - started)


def transformers_serve_figures(name: str, model_dir: Path, continuous: bool, args,
                               data_dir: Path, full_length: dict) -> dict[str, list[float]]:
    """`transformers serve` on the same model and prompts, where it runs ({} if not)."""
    port = free_port()
    try:
        process = start_transformers_serve(model_dir, port, continuous,
                                           data_dir / f"{name}.log")
    except (SystemExit, FileNotFoundError) as e:
        print(f"{name}: not measured ({e})", file=sys.stderr)
        return {}
    figures: dict[str, list[float]] = {}
    base_url, model = f"http://127.0.0.1:{port}", str(model_dir)
    try:
        asyncio.run(server_round(base_url, 1, args.tokens, model=model,
                                 extra_body=full_length))  # warm-up
        for _ in range(args.rounds):
            for streams in args.streams:
                tps, _, lengths = asyncio.run(server_round(
                    base_url, streams, args.tokens, model=model, extra_body=full_length))
                figures.setdefault(f"{name}_tps_{streams}", []).append(tps)
                figures.setdefault(f"{name}_answer_tokens", []).extend(lengths)
    except openai.OpenAIError as e:
        print(f"{name}: failed ({e})", file=sys.stderr)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return figures


def create_key(data_dir: Path) -> str:
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(data_dir)}
    out = subprocess.run([sys.executable, "-m", "flywheel", "users", "create", "bench"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", default="1,4,16",
                        type=lambda v: sorted({1, *map(int, v.split(","))}),
                        help="concurrent streams to measure, comma-separated (1 always; "
                             "e.g. 1,16,64 on a GPU)")
    parser.add_argument("--no-hf-serve", dest="hf_serve", action="store_false",
                        help="skip `transformers serve` (measured after the server)")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    model = (build_shaped_model(args.model, data_dir / "models") if args.model in SHAPES
             else args.model)
    loaded = load_model(model, models_dir=data_dir / "models")
    for batch in (1, max(args.streams), 1):  # warm-up: allocation and kernels
        generate_tps(loaded, args.tokens, batch)
    key = create_key(data_dir)
    port = free_port()
    server = start_server(model, data_dir, port)
    base_url = f"http://127.0.0.1:{port}"
    figures: dict[str, list[float]] = {}
    ttfts: list[float] = []
    try:
        for streams in (1, max(args.streams)):  # warm-up
            asyncio.run(server_round(base_url, streams, args.tokens, key))
        for _ in range(args.rounds):  # interleaved, so drift hits every figure alike
            figures.setdefault("generate_tps", []).append(generate_tps(loaded, args.tokens, 1))
            for batch in args.streams[1:]:
                figures.setdefault(f"generate_batch{batch}_tps", []).append(
                    generate_tps(loaded, args.tokens, batch))
            for streams in args.streams:
                tps, firsts, lengths = asyncio.run(server_round(base_url, streams,
                                                                args.tokens, key))
                figures.setdefault(f"server_tps_{streams}", []).append(tps)
                figures.setdefault("server_answer_tokens", []).extend(lengths)
                ttfts += firsts
        peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    model_dir = Path(loaded.model.name_or_path)
    if args.hf_serve:
        for name, continuous in (("hf_serve", False), ("hf_serve_cb", True)):
            figures.update(transformers_serve_figures(name, model_dir, continuous, args,
                                                      data_dir, hf_full_length(loaded,
                                                                               args.tokens)))

    med = {name: (statistics.mean if name.endswith("answer_tokens") else statistics.median)(
        values) for name, values in figures.items()}
    ttfts.sort()
    result = {
        "bench": "serve", "model": args.model, "tokens": args.tokens, "rounds": args.rounds,
        "device": str(loaded.device), "threads": torch.get_num_threads(),
        **{name: round(value, 1) for name, value in med.items()},
        "single_stream_ratio": round(med["server_tps_1"] / med["generate_tps"], 3),
        **{f"scaling_{n}x": round(med[f"server_tps_{n}"] / med["server_tps_1"], 2)
           for n in args.streams[1:]},
        **{f"generate_scaling_{n}x": round(med[f"generate_batch{n}_tps"] / med["generate_tps"],
                                           2) for n in args.streams[1:]},
        **{f"{name}_scaling_{n}x": round(med[f"{name}_tps_{n}"] / med[f"{name}_tps_1"], 2)
           for name in ("hf_serve", "hf_serve_cb") for n in args.streams[1:]
           if f"{name}_tps_{n}" in med},
        "ttft_p50_ms": round(1000 * ttfts[len(ttfts) // 2], 1),
        "ttft_p99_ms": round(1000 * ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.99))], 1),
        "server_peak_rss_mb": round(peak, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
