"""Training runs: one row per reward-model, PPO, evaluation or whole-cycle job, from start
to success or failure."""

from typing import Any

from sqlmodel import Session, col, select

from feedback.errors import NotFound, RegistryError
from feedback.models import RunKind, RunStatus, TrainingRun, utcnow


def _kind(kind: str) -> RunKind:
    try:
        return RunKind(kind)
    except ValueError:
        raise RegistryError(
            f"run kind must be one of {', '.join(RunKind)}, not {kind!r}") from None


def _run_status(status: str) -> RunStatus:
    try:
        return RunStatus(status)
    except ValueError:
        raise RegistryError(
            f"run status must be one of {', '.join(RunStatus)}, not {status!r}") from None


def start_run(session: Session, *, kind: str, config: dict[str, Any],
              data_window: dict[str, Any]) -> TrainingRun:
    """A run that starts now. `data_window` says which feedback it sees."""
    run = TrainingRun(kind=_kind(kind), config=dict(config), data_window=dict(data_window))
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, *, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"training run {run_id} not found")
    return run


def _end(session: Session, run_id: int, status: RunStatus, **fields: Any) -> TrainingRun:
    run = get_run(session, run_id=run_id)
    if run.status != RunStatus.running:
        raise RegistryError(f"training run {run_id} has already {run.status}")
    run.status, run.finished_at = status, utcnow()
    for name, value in fields.items():
        setattr(run, name, value)
    session.add(run)
    session.flush()
    return run


def finish_run(session: Session, *, run_id: int, metrics: dict[str, Any],
               adapter_version: str | None = None) -> TrainingRun:
    """The run succeeded, with its figures and the adapter it made or judged."""
    return _end(session, run_id, RunStatus.succeeded, metrics=dict(metrics),
                adapter_version=adapter_version)


def fail_run(session: Session, *, run_id: int, error: str) -> TrainingRun:
    return _end(session, run_id, RunStatus.failed, error=error)


def list_runs(session: Session, *, kind: str | None = None, status: str | None = None,
              limit: int = 50) -> list[TrainingRun]:
    """The newest runs first, optionally of one kind and in one status."""
    query = select(TrainingRun).order_by(col(TrainingRun.id).desc()).limit(limit)
    if kind is not None:
        query = query.where(TrainingRun.kind == _kind(kind))
    if status is not None:
        query = query.where(TrainingRun.status == _run_status(status))
    return list(session.exec(query))


def record_progress(session: Session, *, run_id: int, metrics: dict[str, Any]) -> TrainingRun:
    """Replace a running run's metrics with the latest, so its progress can be watched."""
    run = get_run(session, run_id=run_id)
    if run.status != RunStatus.running:
        raise RegistryError(f"training run {run_id} has already {run.status}")
    run.metrics = dict(metrics)
    session.add(run)
    session.flush()
    return run
