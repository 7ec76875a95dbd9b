"""SQLite files written every trial: a write-ahead log, and commits that do not wait for the disk.

    >>> storage = optuna.storages.RDBStorage("sqlite:///studies/x.db")
    >>> fast_commits(storage.engine)              # the Optuna study's SQLite file
    >>> fast_commits(mlflow_store.engine)         # MLflow's SQLite backend

A study commits some forty small transactions per trial (parameters, user attributes, state,
heartbeat, MLflow's run). In SQLite's default rollback-journal mode each commit waits for
several fsyncs (about 29 ms per commit on the development machine's disk, against 0.01 ms with
the settings below). In WAL mode with synchronous=NORMAL a commit is durable once the log is
synced at a checkpoint: a killed process loses nothing and the file never corrupts; only a power
loss or an OS crash may roll back the last transactions, which the study's recovery (failing
trials left RUNNING, reconciling MLflow) already handles. WAL also lets the local workers of
`run --workers` read while one writes. Engines of other databases are left alone.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fast_commits"]


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    import sqlite3

    cursor = dbapi_connection.cursor()
    try:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # stored in the file: later connections find it set
        except sqlite3.OperationalError:
            pass  # another process holds the file: it stays in its mode (correct, only slower)
        cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
    finally:
        cursor.close()


def fast_commits(engine: Any) -> bool:
    """Give every connection of a SQLite engine WAL mode and synchronous=NORMAL; False if not SQLite."""
    from sqlalchemy import event

    if engine is None or engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return False
    if not event.contains(engine, "connect", _pragmas):
        event.listen(engine, "connect", _pragmas)
        engine.dispose()  # connections opened before the listener are closed; new ones get the pragmas
    return True
