"""Loads the named SQL statements of queries.sql and the schema files."""

from __future__ import annotations

import re
from pathlib import Path

from flask_tasks.shape import TASK_COLUMNS_SQL

SQL_DIR = Path(__file__).resolve().parent
_HEADER = re.compile(r"^-- (\w+): .*$", re.MULTILINE)


def _parse(text: str) -> dict[str, str]:
    found = list(_HEADER.finditer(text))
    statements = {}
    for match, following in zip(found, found[1:] + [None], strict=True):
        end = following.start() if following else len(text)
        statements[match.group(1)] = text[match.end() : end].strip().rstrip(";")
    return statements


# A statement holding {in_status_index} in queries.sql: its two forms, each naming the partial index it reads.
STATUS_INDEX_FORMS = {"": "status <> 'running'", "_running": "status = 'running'"}


# insert_tasks up to its ON CONFLICT: for tasks none of which has an idempotency key, whose answer needs
# only the ids the web made (`Prefer: return=minimal`): no arbiter index to check and nothing to return,
# all stored or none; a fifth less of the insert's time (docs/BENCHMARKS.md).
QUIET_INSERT = "insert_tasks_quiet"


def _load() -> dict[str, str]:
    statements = {}
    for name, sql in _parse((SQL_DIR / "queries.sql").read_text()).items():
        sql = sql.replace("{task_columns}", TASK_COLUMNS_SQL)
        if "{in_status_index}" not in sql:
            statements[name] = sql
            continue
        for suffix, condition in STATUS_INDEX_FORMS.items():
            statements[name + suffix] = sql.replace("{in_status_index}", condition)
    quiet, found, _ = statements["insert_tasks"].partition("\nON CONFLICT")
    if not found:  # an assert would go with python -O
        raise RuntimeError("queries.sql: insert_tasks has no ON CONFLICT line for insert_tasks_quiet to stop before")
    statements[QUIET_INSERT] = quiet
    return statements


QUERIES: dict[str, str] = _load()
SCHEMA: str = (SQL_DIR / "schema.sql").read_text()


def migrations() -> list[tuple[int, str]]:
    """(version, sql) of each numbered migration, in order."""
    found = []
    for path in sorted((SQL_DIR / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")):
        found.append((int(path.name[:4]), path.read_text()))
    return found


SCHEMA_VERSION: int = max([1] + [version for version, _ in migrations()])
