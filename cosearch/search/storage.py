"""Opening the Optuna storage and study of a search, with one-line errors.

``--storage``: omitted -> ``sqlite:///DIR/study.db``; ``memory`` -> in-process only (fast,
nothing saved, for benchmarks); ``journal:PATH`` -> an append-only journal file (safe for
several processes on one machine); anything else -> an SQLAlchemy URL (``sqlite:///...``,
``postgresql://user@host/db`` for several machines).

Processes of one machine find each other's dead trials by pid (``proposers.fail_stale``).
Across machines Optuna's RDB heartbeats do it: every trial in flight gets a heartbeat each
``heartbeat`` seconds; a trial whose heartbeat is older than twice that is failed by
``optuna.storages.fail_stale_trials`` and queued again by ``RetryHeartbeatStaleTrialCallback``.
They are on by default for server databases (PostgreSQL, MySQL) and on request for SQLite.

A study records what it measures (``STUDY_RECORD``: objectives, bounds, space, accelerator,
quality source); a search that asks for something else is refused in one line, so two
kinds of trials never mix in one front.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import optuna

from ..atomic import write_error_message, write_refusal_in
from ..errors import UserError

#: seconds between heartbeats of a trial in flight on a server database (Optuna's example value)
SERVER_HEARTBEAT_S = 60
#: the study's user attribute holding what its trials measure
STUDY_RECORD = "cosearch"


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


def is_server(url: str) -> bool:
    """A database server several machines can share (not a file, not memory)."""
    return "://" in url and not url.startswith("sqlite")


def open_storage(storage: str | None, out: str | Path | None, heartbeat: int | None = None):
    """An Optuna storage object for ``storage`` (see the module doc). ``heartbeat``: seconds
    between heartbeats of trials in flight (RDB storages; default: SERVER_HEARTBEAT_S on a
    server database, off for SQLite)."""
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
        if heartbeat is None and not sqlite:
            heartbeat = SERVER_HEARTBEAT_S
        beat = {}
        if heartbeat is not None:
            from optuna.storages import RetryHeartbeatStaleTrialCallback
            beat = dict(heartbeat_interval=int(heartbeat), grace_period=2 * int(heartbeat),
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=None))
        with study_lock(storage), warnings.catch_warnings():  # a fresh file: racing table creation
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            rdb = optuna.storages.RDBStorage(storage, engine_kwargs=kw, **beat)
        if sqlite:
            _fast_sqlite(rdb)
        return rdb
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - drivers raise many types; all mean "cannot open"
        _raise_if_disk_refused(f"--storage {describe(storage)}", e)
        raise UserError(f"--storage {describe(storage)} cannot be opened ({type(e).__name__}: "
                        f"{_first_line(e)[:200]}); check the URL, the server and the driver") from None


def _raise_if_disk_refused(what: str, e: Exception) -> None:
    """A full or read-only disk (SQLite: "database or disk is full") is the machine, not a
    bad URL or a damaged study: say so in one line."""
    refused = write_refusal_in(e)
    if refused is not None:
        raise UserError(f"{what} cannot be opened: {write_error_message(None, refused)}") from None


def _first_line(e: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


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


def heartbeat_interval(storage) -> int | None:
    """Seconds between heartbeats of the storage's trials (None: heartbeats are off)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled
    return storage.get_heartbeat_interval() if is_heartbeat_enabled(storage) else None


def open_study(storage, name: str, directions: list[str], sampler, record: dict | None = None) -> optuna.Study:
    """Create or load the study (call under ``study_lock``). A stored study made for other
    objectives or settings (``record``, kept in the study itself) is a one-line UserError."""
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                    sampler=sampler, load_if_exists=True)
    except Exception as e:  # noqa: BLE001
        _raise_if_disk_refused(f"study {name!r}", e)
        raise UserError(f"study {name!r} cannot be opened ({type(e).__name__}: {_first_line(e)[:200]})") from None
    got = [d.name.lower() for d in study.directions]
    if got != directions:
        raise UserError(f"study {name!r} exists with directions {got}, but the objectives ask for "
                        f"{directions}; use another --study or --out")
    if record is not None:
        check_study_record(study, record)
    return study


def check_study_record(study: optuna.Study, record: dict) -> None:
    """The study keeps the first search's ``record``; a search with another is refused.
    (A study made before records were kept takes this one.)"""
    saved = study.user_attrs.get(STUDY_RECORD)
    if saved is None:
        study.set_user_attr(STUDY_RECORD, record)
        return
    for k in sorted(set(saved) | set(record)):
        if saved.get(k) != record.get(k):
            raise UserError(f"study {study.study_name!r} holds trials made with {k}={saved.get(k)!r}, but this "
                            f"search gives {k}={record.get(k)!r}; use the same settings to add to it, or "
                            "another --study (or --out)")


@contextlib.contextmanager
def storage_errors(url: str):
    """A storage that cannot write (a full disk, a lost server) ends the search in one line:
    what is recorded stays, and the same command resumes once the cause is fixed."""
    import sqlalchemy.exc
    try:
        yield
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError) as e:
        refused = write_refusal_in(e)
        if refused is not None:  # a full or read-only disk: the same line as every other write
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else None
            raise UserError(write_error_message(path, refused)) from None
        cause = e.__cause__ or e.__context__ or e
        raise UserError(f"the study storage {describe(url)} failed ({type(cause).__name__}: "
                        f"{_first_line(cause)[:160]}); "
                        "free disk space or check the server, then rerun the same command to resume") from None
