"""Opening a study: its Optuna storage, its sampler, the study itself (new, resumed or joined).

    >>> study = open_study(config)                      # create, or resume the stored one
    >>> study = open_study(config, create=False)        # read it (a UserError if there is none)
    >>> stored_config(study).trials, finished_count(study)

A study records the resolved config it was created with; a later run must measure the same
things (StudyConfig.SEARCH_DEFINING) or is refused. RDB storages get a heartbeat, so a killed
worker's trials can be failed (recovery.py); a SQLite file gets a write-ahead log and commits
without an fsync each (fastsqlite.py).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import UserError, first_line
from ..fastsqlite import fast_commits
from .config import ConfigError, StudyConfig, config_from_dict

__all__ = ["GRACE", "HEARTBEAT", "finished_count", "make_sampler", "open_study", "storage_for", "stored_config"]

HEARTBEAT, GRACE = 5, 10  # seconds: a trial whose worker is silent this long is failed
CREATION_WAIT = 30  # seconds a joining worker waits for the creator to finish setting up a study


def storage_for(url: str):
    """An Optuna storage for url; RDB storages get a heartbeat so a killed worker's trials fail over.

    Workers starting together on a new database may race to create its tables: a creation
    that collides with another is retried. An unreachable database is a UserError at once.
    """
    import random
    import warnings

    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        shown = url
        if url.startswith(("postgresql://", "postgres://")):  # the driver we install, whatever SQLAlchemy's default
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        engine: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite:"):  # several local workers may share one file: wait for its lock
            engine = {"connect_args": {"timeout": 60}}
        elif url.startswith("postgresql"):
            engine["connect_args"] = {"connect_timeout": 10}
        for attempt in range(5):
            try:
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT,
                                                     grace_period=GRACE)
                fast_commits(storage.engine)  # a SQLite file: WAL, commits without an fsync each
                return storage
            except (IntegrityError, ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.2 + random.random())  # another worker is creating the same tables
            except (SQLAlchemyError, ImportError, ValueError, OSError) as exc:  # unreachable, bad URL, no driver
                raise UserError(f"cannot open storage {shown}: {first_line(exc)}") from None
    return url


def make_sampler(config: StudyConfig, grid: list[str] | None = None, seed: int | None | str = "config",
                 shared: bool = False):
    """The config's sampler; seed "config" means config.seed, None fresh randomness; shared: several workers."""
    from .samplers import build_sampler
    from .space import GRID_PARAM, UNMODIFIED

    try:
        return build_sampler(config.sampler, config.seed if seed == "config" else seed,
                             {GRID_PARAM: grid} if grid is not None else None, shared=shared,
                             hide=UNMODIFIED if config.encoding() == "fixed" else None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def open_study(config: StudyConfig, create: bool = True, grid: list[str] | None = None,
               on_create: Callable[[Any], None] | None = None, seed: int | None | str = "config",
               shared: bool = False):
    """The stored study of this name, or a new one; a stored one must measure the same things.

    shared: this process is one of several workers on the study (the sampler's constant liar).

    When several workers start at once, one create_study wins; it runs on_create(study) (the
    MLflow parent run, the unmodified trial) and stores the config last. The others wait for
    that config, so they never work on a half-made study.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if create:
        config = config.pinned()  # a study stores its objectives by name@version (run_study pins already)
    storage = storage_for(config.storage_url())
    sampler = make_sampler(config, grid, seed, shared) if create else None
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)} if create else None
    try:
        if create and config.name not in names:
            try:
                study = optuna.create_study(study_name=config.name, storage=storage, sampler=sampler,
                                            directions=config.directions())
            except optuna.exceptions.DuplicatedStudyError:
                study = None  # another worker created it a moment ago: join it below
            if study is not None:
                study.set_user_attr("objectives", config.objective_names())
                study.set_metric_names(config.objective_names())  # optuna-dashboard's axis titles
                if on_create is not None:
                    on_create(study)
                study.set_user_attr("config", config.to_dict())
                return study
        study = optuna.load_study(study_name=config.name, storage=storage, sampler=sampler)
    except KeyError:
        raise UserError(f"no study named {config.name!r} in {config.storage_url()}") from None
    if create:
        deadline = time.monotonic() + CREATION_WAIT
        while "config" not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.2)  # its creator is still setting it up
            study = optuna.load_study(study_name=config.name, storage=storage, sampler=sampler)
    stored = study.user_attrs.get("config")
    if create and stored:
        stored = config_from_dict(_as_run(stored), where=f"study {config.name!r}").to_dict()
        differences = [k for k in StudyConfig.SEARCH_DEFINING if stored.get(k) != config.to_dict().get(k)]
        if differences:
            hint = ""
            if stored["space"].get("encoding") != config.to_dict()["space"].get("encoding"):
                hint = (f" (its space.encoding is {stored['space'].get('encoding')!r}, this run's "
                        f"{config.to_dict()['space'].get('encoding')!r}: set space.encoding in the config)")
            raise ConfigError(
                f"study {config.name!r} was created with other settings for {', '.join(differences)}{hint}; "
                "run it with those, or start a new study with --study NAME"
            )
    return study


def stored_config(study) -> StudyConfig:
    data = study.user_attrs.get("config")
    if not data:
        raise UserError(f"study {study.study_name!r} has no stored rys-search config")
    return config_from_dict(_as_run(data), where=f"study {study.study_name!r}")


def _as_run(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config read as it ran: one stored before suites had versions named version 1 (the only
    one then), before studies had a confirmation stage ran without one, before encodings existed
    searched define-by-run."""
    data = {**data, "space": {"encoding": "define-by-run", **data.get("space", {})}}
    data["objectives"] = [n if "@" in n else f"{n}@1" for n in data.get("objectives", [])]
    data.setdefault("confirm", {"enabled": False})
    return data


def finished_count(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
