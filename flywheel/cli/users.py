"""Commands on users and their API keys: create, list, revoke, rotate, erase, exclude from
training, and how far each annotator's votes are trusted."""

import getpass
import re
from datetime import datetime, timedelta
from typing import Annotated

import typer

from feedback.models import Role, utcnow
from flywheel.cli.common import DataDirOption, DbOption, settings_from
from flywheel.errors import FlywheelError

users_app = typer.Typer(no_args_is_help=True, help="Users and API keys.")

HandleArgument = Annotated[str, typer.Argument(help="The user's handle (or id).")]
ExpiresOption = Annotated[str | None, typer.Option(
    "--expires-in", help="The key expires after this long: e.g. 90d, 12h, 30m, 2w "
    "(default: never).", show_default=False)]
DURATION = re.compile(r"(\d+)\s*([smhdw])")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def expiry(expires_in: str | None) -> datetime | None:
    """When a key given `--expires-in` expires (None: never)."""
    if expires_in is None:
        return None
    match = DURATION.fullmatch(expires_in.strip())
    if match is None or int(match[1]) == 0:
        raise FlywheelError(f"--expires-in takes a positive number and a unit, s, m, h, d or "
                            f"w (e.g. 90d), not {expires_in!r}")
    return utcnow() + timedelta(**{UNITS[match[2]]: int(match[1])})


def _store(db, data_dir):
    from feedback.db import open_store

    settings = settings_from(db=db, data_dir=data_dir)
    return settings, open_store(settings.db_url, event_log=settings.event_log_path)


def _key_state(user) -> str:
    if user.api_key_hash is None:
        return (f"revoked {user.api_key_revoked_at:%Y-%m-%d %H:%M}" if user.api_key_revoked_at
                else "no key")
    expires = f"expires {user.api_key_expires_at:%Y-%m-%d %H:%M}" \
        if user.api_key_expires_at else "never expires"
    used = f"used {user.api_key_last_used_at:%Y-%m-%d %H:%M}" \
        if user.api_key_last_used_at else "never used"
    return f"key, {expires}, {used}"


@users_app.command("create")
def create(
    handle: Annotated[str, typer.Argument(help="A unique name, e.g. alice.")],
    role: Annotated[Role, typer.Option(help="What the key may do: admins manage users and "
                                       "keys (and may do operators' work), operators "
                                       "adapters and review.")] = Role.user,
    expires_in: ExpiresOption = None,
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a user with an API key. The key is printed once and stored only hashed."""
    from feedback.db import session_scope
    from feedback.queries import users
    from flywheel.api_keys import hash_api_key, new_api_key

    expires_at = expiry(expires_in)
    _, engine = _store(db, data_dir)
    key = new_api_key()
    with session_scope(engine) as session:
        if users.get_user_by_handle(session, handle=handle) is not None:
            raise FlywheelError(f"a user named {handle!r} already exists")
        users.create_user(session, handle=handle, role=role, api_key_hash=hash_api_key(key),
                          api_key_expires_at=expires_at)
    typer.echo(f"created {role.value} {handle}; API key (shown only now):")
    typer.echo(key)


@users_app.command("list")
def list_users(db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Every user, with their role and their key's state (never the key)."""
    from feedback.db import session_scope
    from feedback.queries import users

    _, engine = _store(db, data_dir)
    with session_scope(engine) as session:
        for user in users.iter_users(session):
            typer.echo(f"{user.id:>6}  {user.handle[:32]:<32} {user.role:<8} {_key_state(user)}")


@users_app.command("rotate-key")
def rotate_key(handle: HandleArgument, expires_in: ExpiresOption = None, db: DbOption = None,
               data_dir: DataDirOption = None) -> None:
    """Give the user a new API key, printed once; the old one stops working at once."""
    from feedback.db import session_scope
    from feedback.queries import users
    from flywheel.api_keys import hash_api_key, new_api_key

    expires_at = expiry(expires_in)
    _, engine = _store(db, data_dir)
    key = new_api_key()
    with session_scope(engine) as session:
        user = users.find_user(session, handle_or_id=handle)
        users.rotate_api_key(session, user_id=user.id, api_key_hash=hash_api_key(key),
                             expires_at=expires_at)
    typer.echo(f"new API key for {user.handle} (shown only now; the old one no longer works):")
    typer.echo(key)


@users_app.command("revoke")
def revoke(handle: HandleArgument, db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Revoke the user's API key: every server refuses it from now on. Their data stays."""
    from feedback.db import session_scope
    from feedback.queries import users

    _, engine = _store(db, data_dir)
    with session_scope(engine) as session:
        user = users.find_user(session, handle_or_id=handle)
        users.revoke_api_key(session, user_id=user.id)
    typer.echo(f"revoked the API key of {user.handle}")


@users_app.command("exclude")
def exclude(handle: HandleArgument,
            actor: Annotated[str, typer.Option(help="Who decides, for the record.")] = "cli",
            db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Leave every vote of the user (say, a careless one `users quality` found) out of
    training and exports from now on. Their data stays; the review queue does the same
    from one of their items."""
    from feedback.db import session_scope
    from feedback.models import ExclusionScope
    from feedback.queries import exclusions, users

    _, engine = _store(db, data_dir)
    with session_scope(engine) as session:
        user = users.find_user(session, handle_or_id=handle)
        if user.id in exclusions.training_filter(session).users:
            raise FlywheelError(f"the votes of {user.handle} are already left out of training")
        exclusions.exclude(session, scope=ExclusionScope.user, target_id=user.id, actor=actor)
    typer.echo(f"every vote of {user.handle} is left out of training from now on")


@users_app.command("erase")
def erase(
    handle: HandleArgument,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    actor: Annotated[str | None, typer.Option(
        help="Who erases, for the record (default: cli:<your login>).")] = None,
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Erase a user: everything they wrote or voted goes from the store and the event log
    (which keeps only a record that an erasure happened); reward models and adapters
    trained on it are marked for retraining. It cannot be undone."""
    from feedback.db import session_scope
    from feedback.erasure import erase_user
    from feedback.queries import users

    settings, engine = _store(db, data_dir)
    with session_scope(engine) as session:
        user = users.find_user(session, handle_or_id=handle)
    if not yes and not typer.confirm(f"erase {user.handle} (user {user.id}) and everything "
                                     "they wrote or voted, for good?"):
        raise typer.Exit(1)
    report = erase_user(engine, user_id=user.id, actor=actor or f"cli:{getpass.getuser()}",
                        event_log=settings.event_log_path)
    typer.echo(report.summary())


@users_app.command("quality")
def quality(db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Annotator quality: each user's votes, careless pattern, agreement with the
    consensus and with the last reward model, and the weight training gives their votes."""
    from feedback.db import open_store, session_scope
    from feedback.queries.annotators import annotator_quality

    engine = open_store(settings_from(db=db, data_dir=data_dir).db_url)
    with session_scope(engine) as session:
        report = annotator_quality(session)
    typer.echo(f"reward model: {report.reward_model or '(none measured yet)'}")
    typer.echo(f"{'user':>6}  {'handle':<24} {'votes':>6} {'consensus':>13} "
               f"{'reward model':>12}  {'pattern':<11} {'weight':>6}")
    for a in report.annotators:
        consensus = "-" if a.consensus_agreement is None else \
            f"{a.consensus_agreement:.2f} ({a.consensus_items})"
        rm = "-" if a.reward_model_agreement is None else f"{a.reward_model_agreement:.2f}"
        typer.echo(f"{a.user_id:>6}  {a.handle[:24]:<24} {a.votes:>6} {consensus:>13} "
                   f"{rm:>12}  {a.pattern or '-':<11} {a.weight:>6.2f}")
