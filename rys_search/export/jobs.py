"""What to export: the jobs a study names (one trial, or its Pareto front) and the source's facts.

    >>> jobs = study_jobs(study, trial=12)                       # a finished trial of the study
    >>> jobs = study_jobs(study, pareto=pareto_rows(study))      # every member that repeats a block
    >>> source, family, n_layers, hf_config = source_facts(stored_config(study).model)

The study is read, never changed: each job carries the trial's schedule, cheap and confirmed
scores with its verdict, its benchmark checks and MLflow run, so the model card and the trial's run can record the export. The
source's facts come from its headers only (no weights are read).
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..schedule import LayerSchedule
from . import ExportJob

__all__ = ["source_facts", "study_jobs"]


def study_jobs(study: Any, trial: int | None = None, pareto: list[dict[str, Any]] | None = None,
               facts: Any = None) -> list[ExportJob]:
    """One job for trial, or one per Pareto row (search.reports.pareto_rows) that repeats something.

    facts(trial) gives what the study's reports know of a trial beyond its attributes: confirmed
    values, verdict, benchmark checks (search.reports.trial_facts); export does not read them itself.
    """
    name = study.study_name
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    if pareto is not None:
        def repeats_something(text: str) -> bool:
            schedule = LayerSchedule.parse(text)
            return not schedule.is_identity(len(schedule))

        numbers = [row["trial"] for row in pareto if repeats_something(row["schedule"])]
        if not numbers:
            raise UserError(f"the Pareto front of study {name!r} holds only the unmodified model; nothing to export")
    else:
        if trial not in by_number:
            raise UserError(f"study {name!r} has no trial {trial}")
        numbers = [trial]
    jobs = []
    for number in numbers:
        found = by_number[number]
        if found.state.name != "COMPLETE" or not found.user_attrs.get("schedule"):
            raise UserError(f"trial {number} of study {name!r} did not complete ({found.state.name}); nothing to export")
        schedule = LayerSchedule.parse(found.user_attrs["schedule"])
        known = facts(found) if facts is not None else {}
        jobs.append(ExportJob(schedule, study=name, trial=number, scores=found.user_attrs.get("scores") or {},
                              confirmed=known.get("confirmed") or {}, verdict=known.get("verdict"),
                              bench=known.get("bench") or {}, mlflow_run=found.user_attrs.get("mlflow_run")))
    return jobs


def source_facts(spec: str) -> tuple[Any, Any, int, Any]:
    """The model source, its family, layer count and (HF only) config, from headers only."""
    from ..architectures import family_for
    from ..loading import gguf_family, load_config, resolve_model

    source = resolve_model(spec)
    if source.kind == "gguf":
        family, info = gguf_family(source.location)
        return source, family, info.block_count, None
    config, _ = load_config(spec)
    family = family_for(config.model_type)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return source, family, int(text.num_hidden_layers), config
