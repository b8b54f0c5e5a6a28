"""The data directory holds every conversation, so what Flywheel creates there is for its
owner's eyes only: files 0600, directories 0700 (a umask can narrow these, never widen
them). What already exists keeps the mode it has."""

from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dirs(path: str | Path) -> Path:
    """`mkdir -p path`, each directory it creates 0700."""
    path = Path(path)
    if not path.is_dir():
        private_dirs(path.parent)
        path.mkdir(mode=DIR_MODE, exist_ok=True)
    return path
