"""Where the Alembic scripts live and whether a database is at the revision we need."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

_PACKAGE = Path(__file__).resolve().parent
# A source checkout has api/migrations; the wheel ships them inside the package.
_CANDIDATES = (_PACKAGE.parent / "migrations", _PACKAGE / "_migrations")


def migrations_dir() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("Alembic migrations not found next to taskhub_api")


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url:
        config.cmd_opts = None
        config.attributes["url"] = url
    return config


class SchemaVersion:
    def __init__(self) -> None:
        self.script = ScriptDirectory(str(migrations_dir()))
        self.head = self.script.get_current_head()
        self.known = {rev.revision for rev in self.script.walk_revisions()}

    def satisfied_by(self, current: set[str]) -> bool:
        """At our head, or at a revision this code does not know: a newer release
        migrated ahead of us, and migrations are written expand-then-contract so the
        previous release keeps working during a rollout."""
        if self.head in current:
            return True
        return bool(current) and not (current & self.known)
