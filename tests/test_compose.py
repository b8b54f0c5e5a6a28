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


def test_every_service_command_is_a_real_flywheel_command():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    cli = get_command(app)
    commands = [s["command"] for s in services.values() if "command" in s]
    assert commands, "compose.yaml runs no flywheel command"
    for command in commands:
        assert command[0] == "flywheel"
        assert command[1] in cli.commands, f"compose runs unknown command {command[1]!r}"


def test_services_built_here_have_a_dockerfile():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    if any(s.get("build") == "." for s in services.values()):
        dockerfile = (ROOT / "Dockerfile").read_text()
        assert "-c constraints.txt" in dockerfile  # pinned, like the README's install
