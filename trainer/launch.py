"""Starting training on N processes of this machine with torchrun: a `flywheel` command
line again (`--processes N`), or one function whose rank-0 result comes back to the caller
(the cycle's training stages, `launch`). torchrun is started so that it ends, and stops its
ranks, when the process that started it ends, even killed. `trainer.distributed` holds what
the ranks do together.
"""

import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainer.distributed import setup, teardown

Progress = Callable[[str, dict], None]  # (stage, its figures so far)


def torchrun_command(processes: int) -> list[str]:
    """`torchrun --standalone --nproc-per-node N`, as this interpreter runs it (`_torchrun`)."""
    return [sys.executable, "-m", "trainer.launch", "torchrun", "--standalone",
            f"--nproc-per-node={processes}"]


# `python -c _WITH_PARENT PARENT_PID COMMAND…` runs COMMAND in place of itself, set to get
# SIGTERM when its parent dies (Linux; the setting survives exec): a killed worker's torchrun
# then stops its ranks rather than train on unseen. (preexec_fn would do it before exec,
# but is unsafe in a process with threads, as a worker is.)
_WITH_PARENT = ("import ctypes, os, signal, sys\n"
                "prctl = getattr(ctypes.CDLL(None), 'prctl', None)\n"
                "if prctl is not None:\n"
                "    prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
                "if os.getppid() != int(sys.argv[1]):  # it died before that\n"
                "    sys.exit(143)\n"
                "os.execv(sys.argv[2], sys.argv[2:])\n")


def start_with_parent(argv: list[str]) -> subprocess.Popen:
    """Start `argv` (argv[0] a full path) as a child that ends when this process does."""
    return subprocess.Popen([sys.executable, "-c", _WITH_PARENT, str(os.getpid()), *argv])


def run_command_on(processes: int, argv: list[str]) -> int:
    """Run `python -m flywheel ARGV` on `processes` processes of this machine; its exit code."""
    process = start_with_parent([*torchrun_command(processes), "-m", "flywheel", *argv])
    try:
        return process.wait()
    finally:
        _stop(process)


def launch(target: str, payload: dict[str, Any], *, processes: int,
           progress: Progress | None = None) -> Any:
    """Run `target` ("module:function") on `processes` processes (torchrun, this machine)
    with `payload` as its keyword arguments, and return what rank 0 returned. Each rank is
    also given `progress`: on rank 0 a callback whose calls reach this process's `progress`
    as they happen, None on the others. A failed rank fails the whole job (RuntimeError)."""
    with tempfile.TemporaryDirectory(prefix="flywheel-job-") as job:
        folder = Path(job)
        torch.save({"target": target, "payload": payload}, folder / "job.pt")
        command = [*torchrun_command(processes), "-m", "trainer.launch", "job", job]
        process = start_with_parent(command)
        read = 0
        try:
            while True:
                finished = process.poll() is not None
                read = _relay_progress(folder / "progress.jsonl", read, progress)
                if finished:
                    break
                time.sleep(0.2)
        finally:
            _stop(process)
        if process.returncode != 0:
            raise RuntimeError(f"{target} failed on {processes} processes (exit code "
                               f"{process.returncode}); its ranks' errors are in the log above")
        return torch.load(folder / "result.pt", map_location="cpu", weights_only=False)


def _stop(process: subprocess.Popen) -> None:
    """End `process` if it still runs (we were interrupted): torchrun stops its ranks."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _relay_progress(path: Path, read: int, progress: Progress | None) -> int:
    """Hand the complete lines written since offset `read` to `progress`; the new offset."""
    if not path.exists():
        return read
    with path.open("rb") as f:
        f.seek(read)
        chunk = f.read()
    complete = chunk[:chunk.rfind(b"\n") + 1]
    for line in complete.splitlines():
        if progress is not None:
            stage, figures = json.loads(line)
            progress(stage, figures)
    return read + len(complete)


def _run_job(folder: Path) -> None:
    """One rank of a `launch`ed job."""
    dp, device = setup()
    try:
        job = torch.load(folder / "job.pt", weights_only=False)  # written by `launch`
        module, name = job["target"].split(":")
        function = getattr(importlib.import_module(module), name)
        progress = None
        if dp.is_main:
            def progress(stage: str, figures: dict) -> None:
                with (folder / "progress.jsonl").open("a") as f:
                    f.write(json.dumps([stage, figures], default=str) + "\n")
        result = function(**job["payload"], progress=progress, device=device)
        if dp.is_main:
            torch.save(result, folder / "result.partial")
            os.replace(folder / "result.partial", folder / "result.pt")
    finally:
        teardown()


def _torchrun(args: list[str]) -> int:
    """torchrun with `args`; a failed rank ends it with that rank's exit code, and without
    torchrun's traceback of itself (the rank has said what went wrong: `error: …` or its
    own traceback; torchrun logs which rank failed and how)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as e:
        _, failure = e.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if sys.argv[1] == "torchrun":
        sys.exit(_torchrun(sys.argv[2:]))
    _run_job(Path(sys.argv[2]))
