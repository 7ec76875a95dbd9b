"""A small study end to end on a tiny model on the CPU: storage, MLflow, Pareto, resume."""

import json

import pytest

from rys_search.cli import main
from rys_search.search.config import ConfigError, load_config
from rys_search.search.study import open_study, run_study
from rys_search.tracking import Tracker


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("llama")



def config(tiny_folder, **overrides):
    """A tiny study; the confirmation stage (tests/search/test_confirm.py) off unless a test turns it on."""
    overrides.setdefault("confirm", {"enabled": False})
    return load_config(overrides={"model": tiny_folder, "limit": 3, "trials": 5, "name": "tiny", **overrides})


def finished_runs(cfg):
    runs = Tracker(cfg.tracking_location()).trial_runs(cfg.name)
    return [r for r in runs if r.info.status == "FINISHED"]


def test_a_small_study_end_to_end(tiny_folder, workdir, capsys):
    quick = workdir / "quick.toml"  # the default study, with a confirmation stage that is quick on a tiny model
    quick.write_text('[confirm]\nlimit = 2\nobjectives = { math = "math@1", eq = "eq@2", reasoning = "reasoning@1" }\n')
    assert main(["run", "--config", str(quick), "--model", tiny_folder, "--limit", "3", "--trials", "5", "--study",
                 "tiny", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    assert (workdir / "studies" / "tiny.db").is_file() and (workdir / "mlruns" / "mlflow.db").is_file()
    cfg = config(tiny_folder)
    study = open_study(cfg, create=False)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 5
    assert study.trials[0].user_attrs["schedule"] == "0-5"  # the unmodified model runs first
    runs = finished_runs(cfg)
    assert sorted(int(r.data.tags["rys.trial"]) for r in runs) == sorted(t.number for t in finished)
    ids = {int(r.data.tags["rys.trial"]): r.info.run_id for r in runs}  # opened by the writer, stored with the trial
    scored = [t for t in finished if "duplicate_of" not in t.user_attrs]
    assert scored and all(t.user_attrs["mlflow_run"] == ids[t.number] for t in scored)
    complete = [r for r in runs if r.data.tags["rys.state"] == "COMPLETE"]
    assert complete and all("3_interval/math_v1_change_lo" in r.data.metrics and "schedule" in r.data.params
                            for r in complete)
    assert (workdir / "mlruns" / "artifacts").is_dir()
    stored = json.loads(json.dumps(study.user_attrs["config"]))
    assert stored["trials"] == 5 and stored["limit"] == 3

    assert study.user_attrs["config"]["objectives"] == ["math@1", "eq@1", "reasoning@1"]  # stored by version
    confirmed = [t for t in finished if "confirmed" in t.user_attrs]  # the default study confirms its front
    assert confirmed and "eq@2:generate" in confirmed[0].user_attrs["confirmed"]

    assert main(["pareto", "--study", "tiny", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["pareto"]
    assert rows and all(r["verdict"] in ("unmodified", "gain", "mixed", "worse", "no change", "broken output")
                        for r in rows)  # every member confirmed: the study had budget for its whole front
    assert main(["ls"]) == 0 and "tiny" in capsys.readouterr().out
    assert main(["status", "--study", "tiny"]) == 0
    assert "5 finished of 5" in capsys.readouterr().out


def test_resume_and_no_duplicate_evaluation(tiny_folder, workdir):
    cfg = config(tiny_folder, trials=3, sampler="random", seed=3, name="resume")
    first = run_study(cfg, progress=False)
    assert first["finished_trials"] == 3
    again = run_study(config(tiny_folder, trials=8, sampler="random", seed=3, name="resume"), progress=False)
    assert again["finished_trials"] == 8
    study = open_study(cfg, create=False)
    evaluated = [t.user_attrs["schedule"] for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert len(evaluated) == len(set(evaluated))  # every schedule scored once
    assert len(finished_runs(cfg)) == 8
    assert run_study(config(tiny_folder, trials=8, sampler="random", seed=3, name="resume"), progress=False)["status"] == "already complete"


def test_resume_after_an_interruption(tiny_folder, workdir, monkeypatch):
    from rys_search.search import study as study_module

    cfg = config(tiny_folder, trials=6, name="interrupted", sampler="random")
    calls = {"n": 0}
    original = study_module.StudyRunner.__call__

    def flaky(self, trial):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C in the third trial
        return original(self, trial)

    monkeypatch.setattr(study_module.StudyRunner, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, progress=False)
    monkeypatch.setattr(study_module.StudyRunner, "__call__", original)
    summary = run_study(cfg, progress=False)
    assert summary["finished_trials"] == 6
    study = open_study(cfg, create=False)
    assert [t.state.name for t in study.trials].count("FAIL") == 1
    assert len(finished_runs(cfg)) == 6


def test_contradictory_resume_and_bad_flags(tiny_folder, workdir, capsys):
    run_study(config(tiny_folder, trials=1, name="fixed"), progress=False)
    with pytest.raises(ConfigError, match="created with other settings for objectives"):
        run_study(config(tiny_folder, trials=2, name="fixed", objectives="math"), progress=False)
    assert main(["run", "--model", tiny_folder, "--sampler", "annealing"]) == 2
    assert "unknown sampler 'annealing'" in capsys.readouterr().err
    assert main(["run", "--model", tiny_folder, "--objectives", "math,vibes"]) == 2
    assert "unknown objective 'vibes'" in capsys.readouterr().err
    assert main(["status", "--study", "nothing-here"]) == 2
    assert "no study named 'nothing-here'" in capsys.readouterr().err


@pytest.mark.parametrize("sampler", ["nsga2", "nsga3", "gp", "grid"])
def test_every_sampler_runs(tiny_folder, workdir, sampler):
    overrides = {"trials": 3, "sampler": sampler, "name": f"s-{sampler}", "objectives": "math,reasoning",
                 "extra_objectives": "added_layers"}
    if sampler == "grid":
        from rys_search.search.config import SearchSpace
        overrides["space"] = SearchSpace(max_blocks=1, width=(1, 2), extra_passes=(1, 1))
    summary = run_study(config(tiny_folder, **overrides), progress=False)
    assert summary["finished_trials"] == 3 and summary["pareto"]


def test_screen_prunes_without_running_the_probes(tiny_folder, workdir):
    from rys_search.search.config import Screen

    cfg = config(tiny_folder, trials=4, name="screened", sampler="random", screen=Screen(max_kl=1e-6))
    run_study(cfg, progress=False)
    study = open_study(cfg, create=False)
    pruned = [t for t in study.trials if t.state.name == "PRUNED" and "duplicate_of" not in t.user_attrs]
    assert pruned and all(t.user_attrs["pruned_reason"].startswith("fixed-point screen: next-token KL") for t in pruned)
    assert all("scores" not in t.user_attrs for t in pruned)  # the probes never ran
