import pytest


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh folder: studies/ and mlruns/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
