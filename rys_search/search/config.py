"""Study configs: a TOML file, validated, with CLI flags on top; the resolved config is stored.

    >>> config = load_config("studies/default.toml", overrides={"trials": 100, "sampler": "nsga2"})
    >>> config.storage_url(), config.tracking_uri()

Unknown keys and contradictory settings are refused with a message naming the file and key.
`trials` and `limit` may be "auto": 500 trials over whole splits on a GPU, a small study on a
CPU (so the default command finishes in minutes on a laptop).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..scoring.objective import MODES
from ..tables import check_table, check_type
from .samplers import SAMPLERS

__all__ = ["ConfigError", "Confirm", "SearchSpace", "Screen", "StudyConfig", "default_config_path", "load_config"]

ENCODINGS = ("define-by-run", "fixed")  # search/space.py and search/encoding.py
FIXED_ENCODING_SAMPLERS = ("nsga2", "nsga3", "gp")  # learn only parameters every trial has: "auto" gives them "fixed"
COST_OBJECTIVES = ("added_layers",)  # minimised; computed from the schedule, no model run
AUTO = "auto"
CPU_TRIALS, GPU_TRIALS = 12, 500
CPU_LIMIT = 24
CPU_CONFIRM_LIMIT, CPU_CONFIRMED = 4, 2
GRID_SPACE = {"max_blocks": 1, "extra_passes": [1, 1]}  # the grid sampler's (i, j) grid: one block run twice
log = logging.getLogger(__name__)


class ConfigError(UserError):
    """A study config that cannot be used: unknown keys, wrong types or contradictory settings."""


@dataclass(frozen=True)
class SearchSpace:
    max_blocks: int = 2  # most repeated blocks in one schedule
    width: tuple[int, int] = (1, 8)  # layers per block, inclusive range
    extra_passes: tuple[int, int] = (1, 2)  # extra runs of a block, inclusive range
    max_added_layers: int = 16  # budget: sum over blocks of width x extra passes
    region: tuple[int, int] = (0, -1)  # first and last layer a block may use (negative: from the end)
    encoding: str = AUTO  # "define-by-run", "fixed" (max_blocks slots, each on/off); "auto": by sampler

    def resolved_region(self, n_layers: int) -> tuple[int, int]:
        lo, hi = (x if x >= 0 else n_layers + x for x in self.region)
        if not 0 <= lo <= hi < n_layers:
            raise ConfigError(f"space.region {list(self.region)} is outside a model with {n_layers} layers")
        return lo, hi


@dataclass(frozen=True)
class Screen:
    enabled: bool = True
    max_kl: float = 2.0  # prune a schedule whose next-token KL from the unmodified model exceeds this (nats)
    max_contraction: float = 4.0  # prune when a block's successive steps grow faster than this


@dataclass(frozen=True)
class Confirm:
    """The confirmation stage: what a promising trial is scored on before any change is called a gain."""

    enabled: bool = True
    mode: str = "generate"  # answers generated and parsed, with their parse rate
    split: str = "heldout"  # probe items the search never saw
    limit: int | str = AUTO  # probe items per objective; "auto": all on a GPU, CPU_CONFIRM_LIMIT on a CPU
    top_k: int = 1  # besides the cheap Pareto front, the best k trials of each objective are confirmed
    max_confirmed: int | str = AUTO  # budget: confirmed trials at most; "auto": max(8, trials / 10), 3 on a CPU
    objectives: dict[str, str] = field(default_factory=dict)  # cheap objective -> suite confirming it
    bench: dict[str, str] = field(default_factory=dict)  # benchmark (NAME or NAME:MODE) -> file or folder
    bench_limit: int = 0  # items per benchmark (per BBH task); 0: all

    def __hash__(self) -> int:
        return hash((self.enabled, self.mode, self.split, self.limit, self.top_k, self.max_confirmed,
                     tuple(sorted(self.objectives.items())), tuple(sorted(self.bench.items())), self.bench_limit))


@dataclass(frozen=True)
class StudyConfig:
    name: str = "default"
    model: str = "default"
    objectives: tuple[str, ...] = ("math", "eq", "reasoning")  # maximised
    extra_objectives: tuple[str, ...] = ()  # "fixed_point" (maximised) and/or "added_layers" (minimised)
    mode: str = "logprob"
    split: str = "search"
    limit: int | str = AUTO  # items per objective; "auto": all on a GPU, CPU_LIMIT on a CPU
    sampler: str = "tpe"
    seed: int = 0
    trials: int | str = AUTO  # finished trials in all; "auto": GPU_TRIALS on a GPU, CPU_TRIALS on a CPU
    storage: str = ""  # Optuna storage URL; default sqlite:///studies/NAME.db
    tracking_uri: str = ""  # MLflow; default sqlite:///mlruns/mlflow.db, artifacts in mlruns/artifacts
    device: str = AUTO
    dtype: str = AUTO
    suites: tuple[str, ...] = ()  # extra probe suite folders
    space: SearchSpace = field(default_factory=SearchSpace)
    screen: Screen = field(default_factory=Screen)
    confirm: Confirm = field(default_factory=Confirm)

    # ---- derived -----------------------------------------------------------------------

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        Path("studies").mkdir(exist_ok=True)
        return f"sqlite:///{Path('studies').resolve() / (self.name + '.db')}"

    def tracking_location(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        Path("mlruns").mkdir(exist_ok=True)
        return f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}"

    def directions(self) -> list[str]:
        return ["maximize"] * (len(self.objectives) + int("fixed_point" in self.extra_objectives)) + (
            ["minimize"] if "added_layers" in self.extra_objectives else []
        )

    def objective_names(self) -> list[str]:
        names = list(self.objectives)
        if "fixed_point" in self.extra_objectives:
            names.append("fixed_point")
        if "added_layers" in self.extra_objectives:
            names.append("added_layers")
        return names

    def resolve(self, cuda: bool) -> "StudyConfig":
        """Settle "auto" values for the device at hand."""
        trials = self.trials if self.trials != AUTO else (GPU_TRIALS if cuda else CPU_TRIALS)
        limit = self.limit if self.limit != AUTO else (0 if cuda else CPU_LIMIT)
        c = self.confirm
        confirm = replace(
            c,
            limit=c.limit if c.limit != AUTO else (0 if cuda else CPU_CONFIRM_LIMIT),
            max_confirmed=c.max_confirmed if c.max_confirmed != AUTO else (
                max(8, int(trials) // 10) if cuda else CPU_CONFIRMED),
        )
        return replace(self, trials=trials, limit=limit, confirm=confirm,
                       space=replace(self.space, encoding=self.encoding()))

    def pinned(self, suites_key=None) -> "StudyConfig":
        """The config with each objective named by its versioned key ('math' -> 'math@1') and each
        confirming suite chosen: what a study stores, so that a later default version of a suite never
        changes what an existing study measures. suites_key(name) gives the key (scoring's objective_key)."""
        from ..scoring import objective_key
        from ..scoring.suites import load_suites

        key = suites_key or (lambda name: objective_key(name, list(self.suites)))
        objectives = tuple(key(n) for n in self.objectives)
        confirm = self.confirm
        if confirm.enabled:
            found = load_suites(list(self.suites))
            chosen = {}
            for name, pinned in zip(self.objectives, objectives):
                wanted = confirm.objectives.get(name) or confirm.objectives.get(pinned)
                if wanted is None:  # the newest version of the suite that can be scored in the confirm mode
                    base = found[pinned].name
                    versions = [s for k, s in found.items() if "@" in k and s.name == base and confirm.mode in s.modes]
                    if not versions:
                        raise ConfigError(f"confirm: no version of {base!r} is scored in {confirm.mode} mode; "
                                          f"name one in [confirm] objectives")
                    wanted = max(versions, key=lambda s: s.version).key
                chosen[pinned] = key(wanted)
            bench = {name: str(Path(path).expanduser().resolve()) for name, path in confirm.bench.items()}
            confirm = replace(confirm, objectives=chosen, bench=bench)
        return replace(self, objectives=objectives, confirm=confirm)

    def encoding(self) -> str:
        """The space's encoding: as configured, or for "auto" the sampler's ("fixed" for nsga2, nsga3, gp)."""
        if self.space.encoding != AUTO:
            return self.space.encoding
        return "fixed" if self.sampler in FIXED_ENCODING_SAMPLERS else "define-by-run"

    def item_limit(self) -> int | None:
        return None if self.limit in (0, AUTO) else int(self.limit)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, tuple):
                data[key] = list(value)
        data["space"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["space"].items()}
        return data

    # the settings that define what a study measures: a resumed study must keep them
    SEARCH_DEFINING = ("model", "objectives", "extra_objectives", "mode", "split", "limit", "space", "screen", "suites",
                       "confirm")


def default_config_path() -> Path:
    """The default study config that ships with the package (studies/default.toml of the repository)."""
    return Path(__file__).resolve().parents[1] / "studies" / "default.toml"


def _pair(where: str, key: str, value: Any) -> tuple[int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{where}: {key} must be two whole numbers [low, high], got {value!r}")
    return int(value[0]), int(value[1])


def _table(where: str, cls: type, data: Any) -> Any:
    defaults = cls()

    def is_pair(value: Any) -> bool:
        return isinstance(value, tuple) and len(value) == 2 and all(isinstance(x, int) for x in value)

    kinds = {f.name: None if is_pair(getattr(defaults, f.name)) else type(getattr(defaults, f.name)) for f in fields(cls)}
    values = check_table(data, kinds, where, error=ConfigError)
    return cls(**{k: _pair(where, k, v) if kinds[k] is None else v for k, v in values.items()})


def _confirm_table(where: str, data: Any) -> Confirm:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table")
    special = {k: data[k] for k in ("limit", "max_confirmed", "objectives", "bench") if k in data}
    plain = _table(where, Confirm, {k: v for k, v in data.items() if k not in special})
    for key in ("limit", "max_confirmed"):
        value = special.get(key, AUTO)
        if value != AUTO and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{where}: {key} must be a whole number >= 0 or \"auto\", got {value!r}")
    for key in ("objectives", "bench"):
        table = special.get(key, {})
        if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
            raise ConfigError(f"{where}: {key} must be a table of names to strings, got {table!r}")
    return replace(plain, limit=special.get("limit", AUTO), max_confirmed=special.get("max_confirmed", AUTO),
                   objectives=dict(special.get("objectives", {})), bench=dict(special.get("bench", {})))


def _build(where: str, data: dict[str, Any]) -> StudyConfig:
    check_table(data, {f.name: None for f in fields(StudyConfig)}, where, error=ConfigError)  # unknown keys
    if data.get("sampler") == "grid" and not isinstance(data.get("space"), SearchSpace):
        data = {**data, "space": {**GRID_SPACE, **data.get("space", {})}}  # what the file leaves out, grid brings
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "space":
            values[key] = value if isinstance(value, SearchSpace) else _table(f"{where} [space]", SearchSpace, value)
        elif key == "screen":
            values[key] = value if isinstance(value, Screen) else _table(f"{where} [screen]", Screen, value)
        elif key == "confirm":
            values[key] = value if isinstance(value, Confirm) else _confirm_table(f"{where} [confirm]", value)
        elif key in ("objectives", "extra_objectives", "suites"):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key} must be a list of names")
            values[key] = tuple(value)
        elif key in ("trials", "limit"):
            if value != AUTO and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{where}: {key} must be a whole number or \"auto\", got {value!r}")
            values[key] = value
        else:
            values[key] = check_type(where, key, value, type(getattr(StudyConfig(), key)), ConfigError)
    return _validate(where, StudyConfig(**values))


def _validate(where: str, c: StudyConfig) -> StudyConfig:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", c.name):
        raise ConfigError(f"{where}: name must be letters, digits, '.', '_' or '-', got {c.name!r}")
    if c.sampler not in SAMPLERS:
        raise ConfigError(f"{where}: unknown sampler {c.sampler!r}; use one of {', '.join(SAMPLERS)}")
    if c.mode not in MODES:
        raise ConfigError(f"{where}: unknown mode {c.mode!r}; use one of {', '.join(MODES)}")
    if c.split not in ("search", "heldout"):
        raise ConfigError(f"{where}: split must be search or heldout, got {c.split!r}")
    if not c.objectives:
        raise ConfigError(f"{where}: objectives names no objective")
    if len(set(c.objectives)) != len(c.objectives):
        raise ConfigError(f"{where}: objectives names one twice: {list(c.objectives)}")
    for extra in c.extra_objectives:
        if extra not in ("fixed_point", *COST_OBJECTIVES):
            raise ConfigError(f"{where}: extra_objectives may hold fixed_point and added_layers, got {extra!r}")
    if "fixed_point" in c.objectives:
        raise ConfigError(f"{where}: fixed_point is an extra objective (extra_objectives), not a probe")
    if isinstance(c.trials, int) and c.trials < 1:
        raise ConfigError(f"{where}: trials must be at least 1")
    if isinstance(c.limit, int) and c.limit < 0:
        raise ConfigError(f"{where}: limit must be 0 (all items) or more")
    s = c.space
    if s.max_blocks < 1:
        raise ConfigError(f"{where}: space.max_blocks must be at least 1")
    if not 1 <= s.width[0] <= s.width[1]:
        raise ConfigError(f"{where}: space.width must be [low, high] with 1 <= low <= high, got {list(s.width)}")
    if not 1 <= s.extra_passes[0] <= s.extra_passes[1]:
        raise ConfigError(f"{where}: space.extra_passes must be [low, high] with 1 <= low <= high, got {list(s.extra_passes)}")
    if s.max_added_layers < s.width[0] * s.extra_passes[0]:
        raise ConfigError(
            f"{where}: space.max_added_layers ({s.max_added_layers}) is below the smallest block "
            f"(width {s.width[0]} x {s.extra_passes[0]} extra pass): no schedule fits"
        )
    if s.encoding not in (AUTO, *ENCODINGS):
        raise ConfigError(f"{where}: space.encoding must be {', '.join(ENCODINGS)} or auto, got {s.encoding!r}")
    if c.sampler == "grid" and s.encoding == "fixed":
        raise ConfigError(f"{where}: the grid sampler sweeps its own (i, j) pairs; space.encoding = \"fixed\" is for the other samplers")
    if c.sampler == "grid" and (s.max_blocks != 1 or s.extra_passes != (1, 1)):
        raise ConfigError(
            f"{where}: the grid sampler sweeps single blocks run twice (the (i, j) grid); "
            "set space.max_blocks = 1 and space.extra_passes = [1, 1]"
        )
    if c.screen.max_kl <= 0 or c.screen.max_contraction <= 0:
        raise ConfigError(f"{where}: screen thresholds must be positive")
    k = c.confirm
    if k.mode not in MODES:
        raise ConfigError(f"{where}: confirm.mode must be one of {', '.join(MODES)}, got {k.mode!r}")
    if k.split not in ("search", "heldout"):
        raise ConfigError(f"{where}: confirm.split must be search or heldout, got {k.split!r}")
    if k.top_k < 0 or k.bench_limit < 0:
        raise ConfigError(f"{where}: confirm.top_k and confirm.bench_limit must be 0 or more")
    unknown = sorted(set(k.objectives) - set(c.objectives) - {o.split("@")[0] for o in c.objectives})
    if unknown:
        raise ConfigError(f"{where}: confirm.objectives names {', '.join(unknown)}, which the study does not search")
    return c


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read a study config (default: studies/default.toml) and apply CLI overrides on top."""
    file = Path(path) if path else default_config_path()
    if not file.is_file():
        raise ConfigError(f"study config {file} does not exist")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc})") from None
    _build(str(file), data)  # the file alone must be valid
    merged = dict(data)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        # a table given on top of the file's ([confirm] enabled = false) changes only the keys it names
        merged[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    if merged.get("sampler") == "grid" and data.get("sampler") != "grid" and isinstance(merged.get("space", {}), dict):
        merged["space"] = _grid_space(merged.get("space", {}))  # the file's space was written for another sampler
    return _build(f"{file} with command-line options", merged)


def _grid_space(space: dict[str, Any]) -> dict[str, Any]:
    """The space with the grid sampler's settings in place of the file's, saying what it set."""
    had = [f"space.{k} = {_as_list(space[k])}" for k, v in GRID_SPACE.items() if k in space and _as_list(space[k]) != v]
    log.info("the grid sampler sweeps single blocks run twice: it sets space.max_blocks = 1, space.extra_passes = [1, 1]%s",
             f" (the config had {', '.join(had)})" if had else "")
    return {**space, **GRID_SPACE}


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def config_from_dict(data: dict[str, Any], where: str = "stored config") -> StudyConfig:
    return _build(where, data)
