import os
from dataclasses import dataclass

import pytest


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh folder: studies/ and mlruns/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


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
