"""The event log's side of an erasure (`feedback.erasure`): which records went with the
erased user, and the user's prompts blanked out of adapters' evaluation reports (where the
store's copy is blanked too)."""

from collections.abc import Callable, Iterator
from typing import Any

from feedback.logformat import KEYS, MODELS, REFERENCES
from feedback.models import MessageRole

ERASED = "[erased]"  # what stands in an evaluation report where the user's prompt stood


def blank_eval_report(report: Any, prompts: set[str]) -> Any:
    """The report with each sample whose prompt is one of `prompts` blanked out (prompt
    and answers), in its samples and its markdown; the same object if none is."""
    samples = report.get("samples") if isinstance(report, dict) else None
    if not isinstance(samples, list):
        return report
    hit = [s for s in samples if isinstance(s, dict) and s.get("prompt") in prompts]
    if not hit:
        return report
    markdown = report.get("markdown")
    if isinstance(markdown, str):
        lines = markdown.split("\n")
        for sample in hit:
            lines = [_blank_line(line, sample) for line in lines]
        markdown = "\n".join(lines)
    blank = {"prompt": ERASED, "candidate": ERASED, "baseline": ERASED}
    return {**report, "markdown": markdown,
            "samples": [{**s, **blank} if s in hit else s for s in samples]}


def _blank_line(line: str, sample: dict[str, Any]) -> str:
    """A markdown line of the report (`evaluate.render_markdown`) with the sample's prompt
    and answers blanked."""
    if line == f"**Prompt:** {sample['prompt']}":
        return f"**Prompt:** {ERASED}"
    for side in ("candidate", "baseline"):
        answer = sample.get(side)
        if isinstance(answer, str) and line.startswith(f"- {side} (") \
                and line.endswith(f"): {answer}"):
            return line[:len(line) - len(answer)] + ERASED
    return line



def _log_references() -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """For each record type: the fields whose erased target takes the record with it
    (foreign keys ON DELETE CASCADE, the key of a row keyed by its user, and id lists),
    and those that are only emptied (ON DELETE SET NULL)."""
    tables = {model.__table__.name: kind for kind, model in MODELS.items()}
    found = {}
    for kind, model in MODELS.items():
        cascade, set_null = {}, {}
        for column in model.__table__.columns:
            for key in column.foreign_keys:
                target = tables.get(key.column.table.name)
                if target is not None:
                    ondelete = (key.ondelete or "").upper()
                    (set_null if ondelete == "SET NULL" else cascade)[column.name] = target
        for name, target in REFERENCES[kind].items():
            if name not in set_null:
                cascade[name] = target
        found[kind] = (cascade, set_null)
    return found


class EventLogEraser:
    """`EventLog.rewrite`'s edit for one erased user: a first pass finds every row that
    went with the user (records refer only to records above them), a second writes the
    others, with references to erased rows that the store set to NULL emptied and the
    user's prompts blanked out of adapters' evaluation reports."""

    def __init__(self, user_id: int, prompts: set[str]) -> None:
        self.erased: dict[str, set[int]] = {kind: set() for kind in MODELS}
        self.erased["user"].add(user_id)
        self.prompts = set(prompts)
        self.removed = 0
        self.references = _log_references()

    def edit(self, records: Callable[[], Iterator[dict[str, Any]]]
             ) -> Iterator[dict[str, Any]]:
        for record in records():
            self._plan(record)
        for record in records():
            kept = self._keep(record)
            if kept is None:
                self.removed += 1
            else:
                yield kept

    def touches(self, record: dict[str, Any]) -> bool:
        """Whether the rewrite would drop or change `record`."""
        self._plan(record)
        return self._keep(record) is not record

    def _key(self, record: dict[str, Any]) -> tuple[str, Any] | tuple[None, None]:
        kind = record.get("type")
        return (kind, record.get(KEYS[kind])) if kind in MODELS else (None, None)

    def _plan(self, record: dict[str, Any]) -> None:
        kind, key = self._key(record)
        if kind is None or record.get("deleted") is True:
            return
        cascade, _ = self.references[kind]
        if any(self._hits(record.get(name), target) for name, target in cascade.items()):
            self.erased[kind].add(key)
        if (kind == "message" and key in self.erased["message"]
                and record.get("role") == MessageRole.user
                and isinstance(record.get("content"), str)):
            self.prompts.add(record["content"])

    def _hits(self, value: Any, target: str) -> bool:
        refs = value if isinstance(value, list) else [value]
        return any(ref in self.erased[target] for ref in refs if ref is not None)

    def _keep(self, record: dict[str, Any]) -> dict[str, Any] | None:
        kind, key = self._key(record)
        if kind is None:
            return record
        if key in self.erased[kind] or (KEYS[kind] != "id" and key in self.erased["user"]):
            return None
        _, set_null = self.references[kind]
        emptied = {name: None for name, target in set_null.items()
                   if self._hits(record.get(name), target)}
        report = record.get("eval_report") if kind == "adapter" else None
        if (blanked := blank_eval_report(report, self.prompts)) is not report:
            emptied["eval_report"] = blanked
        return {**record, **emptied} if emptied else record
