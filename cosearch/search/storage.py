"""Opening the Optuna storage and study of a search, with one-line errors.

``--storage``: omitted -> ``sqlite:///DIR/study.db``; ``memory`` -> in-process only (fast,
nothing saved, for benchmarks); ``journal:PATH`` -> an append-only journal file (safe for
several processes on one machine); anything else -> an SQLAlchemy URL (``sqlite:///...``,
``postgresql://user@host/db`` for several machines).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import optuna

from ..atomic import write_error_message, write_refusal_in
from ..errors import UserError


def describe(url: str) -> str:
    """The URL without a password, for messages and search.json."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else url
    return url


def storage_url(storage: str | None, out: str | Path | None) -> str:
    """The storage a search uses: ``storage``, or the SQLite file in ``out``."""
    if storage is not None:
        return storage
    if out is None:
        raise UserError("give --out (the study is kept in DIR/study.db) or --storage")
    return f"sqlite:///{Path(out).resolve() / 'study.db'}"


def lock_path(storage: str) -> Path | None:
    """The lock file that serialises proposing among processes of this machine sharing a
    file storage (SQLite or journal); None for memory and server databases. (Not PATH.lock:
    Optuna's journal backend takes that name for its own lock.)"""
    if storage.startswith("journal:"):
        return Path(storage[len("journal:"):] + ".cosearch-lock")
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        return Path(storage[len("sqlite:///"):] + ".cosearch-lock")
    return None


@contextlib.contextmanager
def study_lock(storage: str):
    """Held while creating the study and while proposing trials: two searches on one fresh
    file storage then neither race creating the tables nor take the same queued trial or
    propose the same arch. Server databases (PostgreSQL) keep their own transactions."""
    path = lock_path(storage)
    if path is None or not path.parent.is_dir():  # no folder: opening the storage will say so
        yield
        return
    import fcntl
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_storage(storage: str | None, out: str | Path | None):
    """An Optuna storage object for ``storage`` (see the module doc)."""
    if storage is None:
        Path(storage_url(storage, out)[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    storage = storage_url(storage, out)
    if storage == "memory":
        return optuna.storages.InMemoryStorage()
    try:
        if storage.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage
            path = Path(storage[len("journal:"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if "://" not in storage:
            raise UserError(f"--storage {storage!r}: give an SQLAlchemy URL (sqlite:///path.db, "
                            "postgresql://user@host/db), journal:PATH or memory")
        sqlite = storage.startswith("sqlite")
        if storage.startswith("postgresql"):
            _need_driver("psycopg2", "postgres", storage)
        kw = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
        with study_lock(storage):  # several processes on a fresh file would race creating tables
            rdb = optuna.storages.RDBStorage(storage, engine_kwargs=kw)
        if sqlite:
            _fast_sqlite(rdb)
        return rdb
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - drivers raise many types; all mean "cannot open"
        _raise_if_disk_refused(f"--storage {describe(storage)}", e)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"--storage {describe(storage)} cannot be opened ({type(e).__name__}: "
                        f"{first[:200]}); check the URL, the server and the driver") from None


def _raise_if_disk_refused(what: str, e: Exception) -> None:
    """A full or read-only disk (SQLite: "database or disk is full") is the machine, not a
    bad URL or a damaged study: say so in one line."""
    refused = write_refusal_in(e)
    if refused is not None:
        raise UserError(f"{what} cannot be opened: {write_error_message(None, refused)}") from None


def _need_driver(module: str, extra: str, storage: str) -> None:
    import importlib.util
    if storage.startswith("postgresql+") or importlib.util.find_spec(module) is not None:
        return
    raise UserError(f"--storage {describe(storage)} needs the {module} driver: "
                    f"pip install 'cosearch[{extra}]'")


def _fast_sqlite(rdb) -> None:
    """Write-ahead log and one fsync per checkpoint instead of per commit: Optuna commits
    once per suggested parameter, and plain SQLite made that ~4x slower here. WAL also lets
    readers run while a writer commits (several processes on one file)."""
    from sqlalchemy import event

    def pragmas(conn, _record):
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(rdb.engine, "connect", pragmas)
    rdb.engine.dispose()  # reconnect with the pragmas


def open_study(storage, name: str, directions: list[str], sampler) -> optuna.Study:
    """Create or load the study; a stored study with other objectives is a UserError."""
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                    sampler=sampler, load_if_exists=True)
    except Exception as e:  # noqa: BLE001
        _raise_if_disk_refused(f"study {name!r}", e)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"study {name!r} cannot be opened ({type(e).__name__}: {first[:200]})") from None
    got = [d.name.lower() for d in study.directions]
    if got != directions:
        raise UserError(f"study {name!r} exists with directions {got}, but the objectives ask for "
                        f"{directions}; use another --study or --out")
    return study
