"""Probe suites as data files: a TOML file per suite in objectives/ or a folder the user names.

    >>> suites = load_suites()                       # objectives/ plus $RYS_SEARCH_OBJECTIVES
    >>> items = suites["math"].items("search")       # 200 generated items, same every time
    >>> items[0].prompt, items[0].answer

Files are parsed, never executed: TOML and JSON only, and prompt templates know one piece of
syntax, ``{field}``, replaced by the item's field of that name.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError
from ..tables import check_table
from .generators import GENERATORS

__all__ = ["Item", "Suite", "SuiteError", "builtin_dir", "load_suites", "read_jsonl", "render"]

SPLITS = ("search", "heldout")
SCORERS = ("digits", "number", "choice", "eq")
MODES = ("logprob", "generate")
_SUITE_KEYS = {
    "name": str, "version": int, "description": str, "source": str, "scorer": str, "prompt": str,
    "answer_prefix": str, "seed": int, "items_per_split": int, "max_new_tokens": int, "options": dict,
    "default": bool, "modes": list, "instructions": dict, "working": bool, "eq_logprob": str, "unparsed": str,
}
EQ_LOGPROB = ("expected_rating", "expected_score")  # v1: score of the expected rating; v2: expected score
UNPARSED = ("zero", "worst")  # what an answer that cannot be parsed scores in generate mode
_REQUIRED = ("name", "version", "source", "scorer", "prompt")
_ITEM_KEYS = {"id", "split", "scorer", "answer", "options", "emotions", "meta"}
_PLACEHOLDER = re.compile(r"\{(\w*)\}")


class SuiteError(UserError):
    """A suite file or item file that cannot be used, with the file (and line) at fault."""


@dataclass(frozen=True)
class Item:
    id: str
    split: str
    scorer: str
    prompt: str  # the rendered user message
    answer: str = ""  # digits: the number; choice: the right option
    options: tuple[str, ...] = ()
    emotions: tuple[tuple[str, float], ...] = ()  # eq: (emotion, reference intensity)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    source: str
    scorer: str
    prompt: str
    path: Path
    description: str = ""
    answer_prefix: str = ""
    seed: int = 0
    items_per_split: int = 200
    max_new_tokens: int = 32
    options: dict[str, Any] = field(default_factory=dict, compare=False)
    default: bool = False  # the version the bare name means (else the highest version)
    modes: tuple[str, ...] = MODES  # the scoring modes this suite supports
    instructions: dict[str, str] = field(default_factory=dict, compare=False)  # mode -> line added to the prompt
    working: bool = False  # generate mode: working allowed, the answer read after the last 'answer' marker or boxed
    eq_logprob: str = "expected_rating"
    unparsed: str = "zero"

    @property
    def key(self) -> str:
        """name@version: what a study stores, so a later default version never changes what it measures."""
        return f"{self.name}@{self.version}"

    def items(self, split: str = "search") -> list[Item]:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return list(_items(self)[split])


def builtin_dir() -> Path:
    """The suites that ship with the package (objectives/ of the repository, linked in as rys_search/objectives)."""
    return Path(__file__).resolve().parents[1] / "objectives"


def render(template: str, fields: dict[str, Any], where: str) -> str:
    """Replace each {name} with fields[name]; any other use of braces is an error."""

    def replace(match: re.Match) -> str:
        key = match.group(1)
        if key not in fields:
            raise SuiteError(f"{where}: the prompt names {{{key}}} but the item has no field {key!r}")
        return str(fields[key])

    return _PLACEHOLDER.sub(replace, template)


def _split_of(text: str) -> str:
    return SPLITS[hashlib.sha256(text.encode("utf-8")).digest()[0] % 2]


def _fields(raw: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in raw.items() if k not in _ITEM_KEYS and isinstance(v, (str, int, float))}
    options = raw.get("options") or []
    fields["options_line"] = f"\nOptions: {', '.join(options)}" if options else ""
    emotions = list((raw.get("emotions") or {}).keys())
    fields["emotion_list"] = "\n".join(emotions)
    fields["answer_format"] = "\n".join(f"{e}: <score>" for e in emotions)
    return fields


def _make_item(suite: Suite, raw: dict[str, Any], where: str, default_id: str) -> Item:
    scorer = raw.get("scorer", suite.scorer)
    if scorer not in SCORERS:
        raise SuiteError(f"{where}: unknown scorer {scorer!r}; use one of {', '.join(SCORERS)}")
    options = raw.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise SuiteError(f"{where}: options must be a list of strings")
    answer = str(raw.get("answer", ""))
    emotions = raw.get("emotions") or {}
    if scorer == "choice" and (len(options) < 2 or answer not in options):
        raise SuiteError(f"{where}: a choice item needs two or more options, one of them the answer {answer!r}")
    if scorer in ("digits", "number") and not re.fullmatch(r"-?\d+", answer):
        raise SuiteError(f"{where}: a digits item needs a whole-number answer, got {answer!r}")
    if scorer == "eq":
        if not isinstance(emotions, dict) or len(emotions) != 4:
            raise SuiteError(f"{where}: an eq item needs four emotions with reference intensities")
        for name, ref in emotions.items():
            if not isinstance(ref, (int, float)) or not 0 <= ref <= 10:
                raise SuiteError(f"{where}: emotion {name!r} needs an intensity from 0 to 10, got {ref!r}")
    prompt = render(suite.prompt, _fields(raw), where)
    split = raw.get("split") or _split_of(prompt)
    if split not in SPLITS:
        raise SuiteError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    return Item(
        id=str(raw.get("id", default_id)),
        split=split,
        scorer=scorer,
        prompt=prompt,
        answer=answer,
        options=tuple(options),
        emotions=tuple((str(k), float(v)) for k, v in emotions.items()),
        meta=dict(raw.get("meta") or {}),
    )


def read_jsonl(path: Path, error: type[UserError] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; anything else is an error naming file and line."""
    error = error or SuiteError
    if not path.is_file():
        raise error(f"item file {path} does not exist")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(raw, dict):
                raise error(f"{path}:{number}: each line must be a JSON object")
            yield number, raw


@lru_cache(maxsize=64)
def _items(suite: Suite) -> dict[str, tuple[Item, ...]]:
    by_split: dict[str, list[Item]] = {s: [] for s in SPLITS}
    if suite.source.startswith("generator:"):
        generator = GENERATORS[suite.source.split(":", 1)[1]]
        seen: set[str] = set()
        rng = random.Random(suite.seed)
        try:
            stream = generator(rng, suite.options)
            for raw in stream:
                item = _make_item(suite, raw, f"{suite.path} (generated)", "")
                if item.prompt in seen or len(by_split[item.split]) >= suite.items_per_split:
                    continue
                seen.add(item.prompt)
                item = Item(**{**item.__dict__, "id": f"{suite.name}-{item.split}-{len(by_split[item.split]):04d}"})
                by_split[item.split].append(item)
                if all(len(v) >= suite.items_per_split for v in by_split.values()):
                    break
        except ValueError as exc:
            raise SuiteError(f"{suite.path}: {exc}") from None
    else:
        path = suite.path.parent / suite.source
        ids: set[str] = set()
        prompts: dict[str, str] = {}
        for number, raw in read_jsonl(path):
            item = _make_item(suite, raw, f"{path}:{number}", f"{suite.name}-{number:04d}")
            if item.id in ids:
                raise SuiteError(f"{path}:{number}: duplicate id {item.id!r}")
            if prompts.get(item.prompt, item.split) != item.split:
                raise SuiteError(f"{path}:{number}: the same item appears in both splits")
            ids.add(item.id)
            prompts[item.prompt] = item.split
            by_split[item.split].append(item)
    return {k: tuple(v) for k, v in by_split.items()}


def _load_suite(path: Path) -> Suite:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML ({exc})") from None
    data = check_table(data, _SUITE_KEYS, str(path), required=_REQUIRED, error=SuiteError)
    if data["scorer"] not in SCORERS:
        raise SuiteError(f"{path}: unknown scorer {data['scorer']!r}; use one of {', '.join(SCORERS)}")
    source = data["source"]
    if source.startswith("generator:") and source.split(":", 1)[1] not in GENERATORS:
        raise SuiteError(f"{path}: unknown generator {source!r}; known: {', '.join(sorted(GENERATORS))}")
    if not source.startswith("generator:") and not (path.parent / source).is_file():
        raise SuiteError(f"{path}: item file {path.parent / source} does not exist")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", data["name"]):
        raise SuiteError(f"{path}: name must be lower-case letters, digits and _, got {data['name']!r}")
    modes = data.get("modes", list(MODES))
    if not modes or not all(m in MODES for m in modes):
        raise SuiteError(f"{path}: modes must list one or more of {', '.join(MODES)}, got {modes!r}")
    data["modes"] = tuple(modes)
    for mode, line in data.get("instructions", {}).items():
        if mode not in MODES or not isinstance(line, str):
            raise SuiteError(f"{path}: [instructions] maps a mode ({', '.join(MODES)}) to a line of text; got {mode!r}")
    if data.get("eq_logprob", EQ_LOGPROB[0]) not in EQ_LOGPROB:
        raise SuiteError(f"{path}: eq_logprob must be one of {', '.join(EQ_LOGPROB)}")
    if data.get("unparsed", UNPARSED[0]) not in UNPARSED:
        raise SuiteError(f"{path}: unparsed must be one of {', '.join(UNPARSED)}")
    return Suite(path=path, **data)


def suite_dirs(extra: list[str | os.PathLike] | None = None) -> list[Path]:
    dirs = [builtin_dir()]
    env = os.environ.get("RYS_SEARCH_OBJECTIVES", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(p) for p in (extra or [])]
    return dirs


def load_suites(extra: list[str | os.PathLike] | None = None) -> dict[str, Suite]:
    """Every suite in objectives/ and in the extra folders, by name@version and by bare name.

    The bare name means the version marked `default = true`, else the highest version. A
    name@version defined twice, or two versions of one name both marked default, is an error.
    """
    suites: dict[str, Suite] = {}
    for folder in suite_dirs(extra):
        if not folder.is_dir():
            raise SuiteError(f"suite folder {folder} does not exist")
        for path in sorted(folder.glob("*.toml")):
            suite = _load_suite(path)
            if suite.key in suites:
                raise SuiteError(f"suite {suite.key!r} is defined twice: {suites[suite.key].path} and {path}")
            suites[suite.key] = suite
    by_name: dict[str, list[Suite]] = {}
    for suite in suites.values():
        by_name.setdefault(suite.name, []).append(suite)
    for name, versions in by_name.items():
        marked = [v for v in versions if v.default]
        if len(marked) > 1:
            raise SuiteError(f"suite {name!r}: versions {', '.join(str(v.version) for v in marked)} are all marked "
                             "default = true; mark one")
        suites[name] = marked[0] if marked else max(versions, key=lambda v: v.version)
    return suites
