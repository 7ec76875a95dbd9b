"""One set of study-locating flags for run, pareto, status, ls and export; --sampler grid from the command line."""

import json
import logging

import pytest

from rys_search.cli import build_parser, main
from rys_search.search.config import load_config
from rys_search.search.storage import open_study

COMMANDS = {"run": [], "pareto": [], "status": [], "ls": [], "export": ["--format", "hf", "--out", "x"]}
FLAGS = ("--study", "--config", "--storage", "--tracking-uri")


@pytest.fixture(scope="module")
def tiny_folder(saved_tiny):
    return saved_tiny("llama")


def subcommands():
    parser = build_parser()
    return next(a for a in parser._actions if a.choices and "run" in a.choices).choices


def test_every_study_command_takes_the_same_four_flags():
    parsers = subcommands()
    for command, extra in COMMANDS.items():
        args = build_parser().parse_args([command, *extra, "--study", "s", "--config", "c.toml", "--storage", "sqlite:///s.db",
                                          "--tracking-uri", "sqlite:///t.db"])
        assert (args.study, args.config, args.storage, args.tracking_uri) == ("s", "c.toml", "sqlite:///s.db", "sqlite:///t.db")
    helps = {c: {o: a.help for a in parsers[c]._actions for o in a.option_strings if o in FLAGS} for c in COMMANDS}
    assert all(set(h) == set(FLAGS) for h in helps.values())
    assert len({json.dumps(h, sort_keys=True) for h in helps.values()}) == 1  # defined once: the same words


def test_a_runs_flags_repeated_on_the_read_commands(tiny_folder, workdir, capsys, caplog, monkeypatch):
    from rys_search.tracking import Tracker

    where = ["--study", "g", "--storage", f"sqlite:///{workdir}/elsewhere.db", "--tracking-uri",
             f"sqlite:///{workdir}/tracking.db"]
    made = []
    init = Tracker.__init__
    monkeypatch.setattr(Tracker, "__init__", lambda self, uri: made.append(uri) or init(self, uri))
    with caplog.at_level(logging.INFO, logger="rys_search"):
        assert main(["run", *where, "--model", tiny_folder, "--trials", "3", "--limit", "2", "--sampler", "grid",
                     "--no-confirm"]) == 0
    assert made == [f"sqlite:///{workdir}/tracking.db"]  # the check before the model loads, used by the study too
    monkeypatch.undo()
    said = [r.getMessage() for r in caplog.records if "grid sampler" in r.getMessage()]
    assert said == ["the grid sampler sweeps single blocks run twice: it sets space.max_blocks = 1, "
                    "space.extra_passes = [1, 1] (the config had space.max_blocks = 2, space.extra_passes = [1, 2])"]
    study = open_study(load_config(overrides={"name": "g", "storage": f"sqlite:///{workdir}/elsewhere.db"}), create=False)
    stored = study.user_attrs["config"]
    assert stored["sampler"] == "grid" and stored["space"]["max_blocks"] == 1 and stored["space"]["extra_passes"] == [1, 1]
    assert all(len(t.user_attrs["blocks"].split(",")) <= 1 for t in study.trials)  # single blocks only
    capsys.readouterr()

    assert main(["pareto", *where, "--no-confirm"]) == 0
    assert f"mlflow ui --backend-store-uri sqlite:///{workdir}/tracking.db" in capsys.readouterr().out
    assert main(["status", *where]) == 0
    out = capsys.readouterr().out
    assert "3 finished of 3" in out and f"sqlite:///{workdir}/tracking.db" in out
    assert main(["ls", *where, "--json"]) == 0
    assert [r["study"] for r in json.loads(capsys.readouterr().out)] == ["g"]
    assert main(["export", *where, "--trial", "999", "--format", "hf", "--out", str(workdir / "out")]) == 2
    assert "study 'g' has no trial 999" in capsys.readouterr().err  # the study was found with the run's flags

    config = workdir / "g.toml"  # a config that names the study and its storage locates it too
    config.write_text(f'name = "g"\nstorage = "sqlite:///{workdir}/elsewhere.db"\n')
    assert main(["status", "--config", str(config)]) == 0
    assert "3 finished of 3" in capsys.readouterr().out
    assert main(["ls"]) == 0 and "no studies" in capsys.readouterr().out  # nothing in studies/*.db
