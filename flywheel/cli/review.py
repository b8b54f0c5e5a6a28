"""Operator commands on the review queue (`feedback.queries.review`): list what waits, and
resolve it. Every resolution is audited under `--actor`."""

import getpass
import json
from dataclasses import asdict
from enum import StrEnum
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, settings_from

review_app = typer.Typer(no_args_is_help=True, help="List and resolve the review queue: flags, "
                         "commented thumbs-down, rewrites and disagreements.")


class Action(StrEnum):
    accept = "accept"
    dismiss = "dismiss"
    exclude = "exclude"
    redact = "redact"


class Scope(StrEnum):
    message = "message"
    vote = "vote"
    user = "user"


def _store(db, data_dir):
    from feedback.db import open_store

    settings = settings_from(db=db, data_dir=data_dir)
    return open_store(settings.db_url, event_log=settings.event_log_path)


def _short(text: str | None, width: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _line(entry) -> str:
    detail = entry.detail
    said = {"flag": lambda: f"{detail.get('category')}: {detail.get('comment', '')}",
            "thumbs_down": lambda: detail.get("comment", ""),
            "rewrite": lambda: f"rewrite: {detail.get('rewrite', '')}",
            "disagreement": lambda: ", ".join(f"{v['handle']} {_short(v['vote'], 20)}"
                                              for v in detail.get("votes", []))}[entry.kind]()
    decided = (f"  [{entry.status}{' ' + entry.exclude_scope if entry.exclude_scope else ''}"
               f" by {entry.decided_by}]" if entry.decided_by else "")
    return (f"{entry.id:>6}  {entry.kind:<12} {entry.status:<9} {entry.handle or '-':<12} "
            f"{_short(said, 40)!r}  on {_short(entry.answer or entry.prompt)!r}{decided}")


@review_app.command("list")
def list_review(
    status: Annotated[str | None, typer.Option(
        help="open, accepted, dismissed, excluded or redacted.")] = "open",
    kind: Annotated[str | None, typer.Option(
        help="flag, thumbs_down, rewrite or disagreement.")] = None,
    limit: Annotated[int, typer.Option(help="Items per page (1-200).")] = 50,
    cursor: Annotated[str | None, typer.Option(
        help="Where the previous page ended (printed below it).")] = None,
    all_statuses: Annotated[bool, typer.Option("--all", help="Every status.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    db: DbOption = None, data_dir: DataDirOption = None,
) -> None:
    """The queue, oldest first (open items unless --status or --all), with what each item
    says and the answer it is about. New feedback is added to it first."""
    from feedback.db import session_scope
    from feedback.queries.review import sync_review_queue
    from feedback.queries.review_listing import list_review_items

    with session_scope(_store(db, data_dir)) as session:
        sync_review_queue(session)
        page = list_review_items(session, status=None if all_statuses else status, kind=kind,
                                 cursor=cursor, limit=limit)
    for entry in page.items:
        typer.echo(json.dumps(asdict(entry), default=str) if as_json else _line(entry))
    if not page.items and not as_json:
        typer.echo("nothing to review")
    if page.next_cursor and not as_json:
        typer.echo(f"more: --cursor {page.next_cursor}")


@review_app.command("resolve")
def resolve(
    item_id: Annotated[int, typer.Argument(help="The item's id (first column of the list).")],
    action: Annotated[Action, typer.Argument(
        help="accept, dismiss, exclude (with --scope) or redact.")],
    scope: Annotated[Scope | None, typer.Option(
        help="With exclude: the item's message (every vote on it), its vote, or its "
        "user's every vote.")] = None,
    user: Annotated[str | None, typer.Option(
        help="With --scope user on a disagreement: the voter to exclude (a handle).")] = None,
    note: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    actor: Annotated[str | None, typer.Option(
        help="Who decides, for the audit trail. [default: your login name]",
        show_default=False)] = None,
    db: DbOption = None, data_dir: DataDirOption = None,
) -> None:
    """Resolve one item of the queue."""
    from feedback.db import session_scope
    from feedback.errors import NotFound
    from feedback.queries.review import resolve_review_item
    from feedback.queries.users import get_user_by_handle

    with session_scope(_store(db, data_dir)) as session:
        user_id = None
        if user is not None:
            found = get_user_by_handle(session, handle=user)
            if found is None:
                raise NotFound(f"no user {user!r}")
            user_id = found.id
        item = resolve_review_item(
            session, item_id=item_id, action=action.value,
            scope=scope.value if scope is not None else None, user_id=user_id, note=note,
            actor=actor or f"cli:{getpass.getuser()}")
        typer.echo(f"review item {item.id} ({item.kind}) is {item.status}"
                   f"{' (' + item.exclude_scope + ')' if item.exclude_scope else ''}")
