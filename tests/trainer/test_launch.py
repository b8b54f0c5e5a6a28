"""What `trainer.launch` starts ends with the process that started it: a killed worker's
torchrun (and so its ranks) does not train on. (Launching itself, on 2 processes, is
tested with the training in test_distributed.py and test_parallel_stages.py.)"""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.launch import start_with_parent


def ended(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(")")[-1].split()[0] in "ZX"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_what_a_process_launches_ends_when_it_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from trainer.launch import start_with_parent\n"
        "child = start_with_parent([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert not ended(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while not ended(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ended(child)
    own = start_with_parent([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert own.wait(timeout=60) == 3  # the command runs in place of the wrapper
