"""Readers for public benchmark files, to check that a schedule's gains are real.

    >>> objective = read_benchmark("gsm8k", "test.jsonl", mode="logprob")
    >>> objective.evaluate(loaded, schedule, split="all", limit=100)

Formats: GSM8K jsonl (question, answer ending '#### N'), a BIG-Bench-Hard folder of task
json files ({"examples": [{"input", "target"}]}), EQ-Bench v2 json (id -> prompt,
reference_answer_fullscale). Items become the same Item type the probe suites use, so both
scoring modes apply. These files are for validation only: search probes are never tuned on them.

Version 2 of every reader (the only one): in generate mode the model works before answering
and the answer is read after its last 'answer' marker (GSM8K: 'The answer is N'; BBH: a line
'Answer: ...') or from a \\boxed{...} after it, as many models write it whatever they are asked,
with its parse rate; an EQ-Bench answer that cannot be parsed scores as the
worst possible answer, and logprob EQ scores the expected item score (see probes.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from .probes import ProbeObjective
from .suites import Item, read_jsonl, render

__all__ = ["BENCHMARKS", "BENCH_MODES", "parse_bench", "read_benchmark", "reading"]

VERSION = 3  # 3: GSM8K answers get 512 new tokens (320 cut a quarter of Qwen2.5-Coder-1.5B's answers short)
ANSWER_ONLY = "Reply with the answer only."
WORKING = "Think it through step by step, then give the final answer on its own line as 'Answer: <answer>'."
GSM8K_PROMPT = "{question}\nSolve the problem, then write the final answer as 'The answer is N'."
EQ_PROMPT = (
    "Read this dialogue and judge how one of the people in it feels.\n\n{dialogue}\n[End of dialogue]\n\n"
    "{question}\n{emotion_list}\n\n"
    "Rate each emotion from 0 (not at all) to 10 (extremely). Reply with exactly these four lines and "
    "nothing else:\n{answer_format}"
)


class BenchmarkError(UserError):
    """A benchmark file that is missing or not in the expected format."""


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise BenchmarkError(f"benchmark file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def gsm8k_items(path: Path) -> list[Item]:
    items = []
    for number, raw in read_jsonl(path, BenchmarkError):
        question, solution = raw.get("question"), raw.get("answer")
        if not isinstance(question, str) or not isinstance(solution, str):
            raise BenchmarkError(f"{path}:{number}: expected a JSON object with question and answer")
        final = solution.rsplit("####", 1)[-1].strip().replace(",", "")
        if not re.fullmatch(r"-?\d+", final):
            continue  # GSM8K answers are whole numbers; skip anything else rather than guess
        prompt = render(GSM8K_PROMPT, {"question": question}, f"{path}:{number}")
        items.append(Item(id=f"gsm8k-{number:04d}", split="all", scorer="number", prompt=prompt, answer=final))
    return items


def _bbh_options(text: str, target: str) -> tuple[list[str], str]:
    """The options a BBH item offers and the scorer for it."""
    letters = re.findall(r"^\(([A-Z])\)", text, flags=re.M)
    if letters:
        return [f"({x})" for x in letters], "choice"
    dashed = re.findall(r"^- (.+)$", text, flags=re.M)
    if dashed and target in dashed:
        return dashed, "choice"
    if target in ("True", "False"):
        return ["False", "True"], "choice"
    if target in ("Yes", "No"):
        return ["No", "Yes"], "choice"
    if re.fullmatch(r"-?\d+", target):
        return [], "digits"
    raise ValueError(f"cannot tell the options of target {target!r}")


def bbh_items(folder: Path) -> list[Item]:
    if not folder.is_dir():
        raise BenchmarkError(f"BIG-Bench-Hard folder {folder} does not exist")
    tasks = sorted(p for p in folder.glob("*.json"))
    if not tasks:
        raise BenchmarkError(f"BIG-Bench-Hard folder {folder} holds no task .json files")
    items = []
    for path in tasks:
        data = _load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
            raise BenchmarkError(f"{path}: expected {{\"examples\": [...]}}")
        for k, example in enumerate(data["examples"]):
            try:
                text, target = example["input"], str(example["target"]).strip()
                options, scorer = _bbh_options(text, target)
            except (KeyError, TypeError, ValueError) as exc:
                raise BenchmarkError(f"{path}: example {k}: {exc}") from None
            items.append(
                Item(
                    id=f"{path.stem}-{k:03d}", split="all", scorer=scorer, prompt=text,
                    answer=target, options=tuple(options), meta={"task": path.stem},
                )
            )
    return items


def eqbench_items(path: Path) -> list[Item]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected an object of id -> question")
    items = []
    for key, question in data.items():
        try:
            prompt, ref = question["prompt"], question["reference_answer_fullscale"]
            dialogue = re.search(r"dialogue:\s*\n(.*?)\[End dialogue\]", prompt, flags=re.S).group(1).strip()
            question_line = re.search(r"\[End dialogue\]\s*\n(.+?)\n", prompt).group(1).strip()
            emotions = {ref[f"emotion{i}"]: float(ref[f"emotion{i}_score"]) for i in range(1, 5)}
        except (KeyError, TypeError, AttributeError, ValueError):
            raise BenchmarkError(f"{path}: question {key!r} is not in the EQ-Bench v2 format") from None
        names = list(emotions)
        fields = {
            "dialogue": dialogue,
            "question": question_line,
            "emotion_list": "\n".join(names),
            "answer_format": "\n".join(f"{e}: <score>" for e in names),
        }
        prompt_text = render(EQ_PROMPT, fields, f"{path}: question {key!r}")
        items.append(
            Item(id=f"eqbench-{key}", split="all", scorer="eq", prompt=prompt_text,
                 emotions=tuple(emotions.items()))
        )
    return items


# per benchmark: reader, answer length in generate mode, and how the answer is read (probes.py)
BENCHMARKS = {
    "gsm8k": (gsm8k_items, 512, {"working": True, "unparsed": "worst"}),
    "bbh": (bbh_items, 384, {"working": True, "unparsed": "worst",
                             "instructions": {"logprob": ANSWER_ONLY, "generate": WORKING}}),
    "eqbench": (eqbench_items, 64, {"unparsed": "worst", "eq_logprob": "expected_score"}),
}
# the mode a benchmark is read in when none is named: how its own harness reads it
BENCH_MODES = {"gsm8k": "generate", "bbh": "logprob", "eqbench": "generate"}


def reading() -> str:
    """How stored results were read: the worked-answer reading and the benchmark readers' version.
    Results read another way (a cache, a study's confirmation baseline, a calibration) are scored
    again, never compared with new ones."""
    from .scorers import ANSWER_READING

    return f"answers {ANSWER_READING}, benchmarks {VERSION}"


def parse_bench(text: str, mode: str | None = None) -> tuple[str, str, str]:
    """'NAME=PATH' or 'NAME:MODE=PATH' -> (name, mode, path); the mode defaults to `mode`, else to
    how the benchmark's own harness reads it (BENCH_MODES). The path must exist."""
    from .objective import MODES

    label, sep, location = text.partition("=")
    name, _, named_mode = label.strip().partition(":")
    if not sep or not location.strip() or not name:
        raise UserError(f"--bench takes NAME=PATH or NAME:MODE=PATH, got {text!r}")
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; use one of {', '.join(BENCHMARKS)}")
    chosen = named_mode or mode or BENCH_MODES[name]
    if chosen not in MODES:
        raise UserError(f"unknown scoring mode {chosen!r} in --bench {text!r}; use one of {', '.join(MODES)}")
    path = Path(location.strip()).expanduser()
    if not path.exists():
        raise BenchmarkError(f"benchmark file {path} does not exist")
    return name, chosen, str(path)


def read_benchmark(name: str, location: str, mode: str = "logprob", limit_per_task: int | None = None) -> ProbeObjective:
    """A benchmark as an objective over split 'all'; BBH's limit applies to each task."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; use one of {', '.join(BENCHMARKS)}")
    reader, max_new_tokens, settings = BENCHMARKS[name]
    items = reader(Path(location).expanduser())
    if limit_per_task:
        kept: dict[str, int] = {}
        chosen = []
        for item in items:
            task = item.meta.get("task", name)
            if kept.get(task, 0) < limit_per_task:
                kept[task] = kept.get(task, 0) + 1
                chosen.append(item)
        items = chosen

    def by_split(split: str) -> list[Item]:
        return items

    return ProbeObjective(name, VERSION, by_split, mode=mode, max_new_tokens=max_new_tokens, **settings)
