"""compose.yaml is valid Compose and runs commands this CLI really has (no container
engine here, so it is checked, not run)."""

import subprocess
import sys
from pathlib import Path

import yaml
from typer.main import get_command

from flywheel.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_matches_the_compose_spec():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(ROOT / "compose.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _services() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def test_every_service_command_is_a_real_flywheel_command():
    services = _services()
    cli = get_command(app)
    commands = [s["command"] for s in services.values() if s.get("build") == "."]
    assert commands, "compose.yaml runs no flywheel command"
    for command in commands:
        assert command[0] == "flywheel"
        assert command[1] in cli.commands, f"compose runs unknown command {command[1]!r}"


def test_services_built_here_have_a_dockerfile():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    if any(s.get("build") == "." for s in services.values()):
        dockerfile = (ROOT / "Dockerfile").read_text()
        assert "-c constraints.txt" in dockerfile  # pinned, like the README's install


def test_the_gateway_reaches_engines_that_run_flywheel_engine_on_the_named_ports():
    services = _services()
    server = services["server"]
    assert server["command"][:2] == ["flywheel", "serve"]
    backends = server["environment"]["FLYWHEEL_BACKENDS"]
    default = backends.removeprefix("${FLYWHEEL_BACKENDS:-").removesuffix("}")
    urls = default.split(",")
    assert len(urls) >= 2
    for url in urls:
        host, port = url.removeprefix("http://").split(":")
        engine = services[host]
        assert engine["command"][:2] == ["flywheel", "engine"]
        assert engine["command"][engine["command"].index("--port") + 1] == port
        assert "profiles" not in engine  # `docker compose up` starts them
        # The gateway names adapters by their path: the engines see the same volume there.
        assert engine["volumes"] == server["volumes"]
        assert engine["environment"]["FLYWHEEL_MODEL"] == server["environment"]["FLYWHEEL_MODEL"]


def test_replicas_share_rate_limits_in_redis():
    services = _services()
    storage = services["server"]["environment"]["FLYWHEEL_RATE_LIMIT_STORAGE"]
    assert storage.startswith("redis://redis:")
    assert services["server"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_the_gpu_profile_runs_vllm_with_runtime_lora_loading():
    vllm = _services()["vllm"]
    assert vllm["profiles"] == ["gpu"] and vllm["image"].startswith("vllm/vllm-openai:")
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "--enable-lora" in vllm["command"]
    assert "data:/data" in vllm["volumes"]
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
