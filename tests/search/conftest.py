import os
import textwrap
from dataclasses import dataclass

import pytest

# Loaded by every Python process that gets the fixture's environment (a `sitecustomize` on
# PYTHONPATH): a worker's first trial waits, once it has named its worker, until `count` workers
# are in a trial, so each of them scores at least one. Without it one worker could take every
# trial of a small study before the others finished starting (CI's 2 cores did that once).
_OVERLAP = """
import os, time
from rys_search.search import runner

_folder, _count = os.environ["RYS_TEST_OVERLAP"], int(os.environ["RYS_TEST_OVERLAP_COUNT"])
_suggest, _waited = runner.StudyRunner.suggest, []

def suggest(self, trial):
    if not _waited:
        _waited.append(True)
        open(os.path.join(_folder, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 300
        while len(os.listdir(_folder)) < _count and time.monotonic() < deadline:
            time.sleep(0.05)
    return _suggest(self, trial)

runner.StudyRunner.suggest = suggest
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh folder: studies/ and mlruns/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def overlapping_workers(tmp_path):
    """env(count): an environment for worker processes in which `count` of them each score a trial."""
    hook, arrived = tmp_path / "overlap-hook", tmp_path / "overlap-arrived"
    hook.mkdir()
    arrived.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(_OVERLAP))

    def env(count: int) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, "RYS_TEST_OVERLAP": str(arrived),
                "RYS_TEST_OVERLAP_COUNT": str(count)}

    return env


@dataclass
class Servers:
    postgres: object  # servers.Postgres
    tracking_uri: str  # an `mlflow server` on a PostgreSQL backend

    def storage(self, name: str) -> str:
        """A fresh PostgreSQL database for one study's Optuna storage."""
        self.postgres.create_database(name)
        return self.postgres.url(name)


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """A real PostgreSQL server and a real `mlflow server` on loopback, stopped after the session.

    Without PostgreSQL the tests that need it are skipped with the reason; with
    RYS_SEARCH_REQUIRE_SERVERS set (as .ci/run does) they fail instead.
    """
    from servers import REQUIRE, missing, mlflow_server, postgres_server

    reason = missing()
    if reason:
        if os.environ.get(REQUIRE):
            pytest.fail(f"{REQUIRE} is set, but the servers cannot be started: {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("mlflow-server")
    with postgres_server() as pg:
        pg.create_database("mlflow")
        with mlflow_server(pg.url("mlflow", driver="+psycopg"), folder) as uri:
            yield Servers(pg, uri)
