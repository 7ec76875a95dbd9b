"""Session fixtures: tiny random models of every family, and the real SmolLM2 (dequantized once)."""

from __future__ import annotations

import os

import pytest

from tiny import TINY, save_tiny, tiny_model

FAMILIES = sorted(TINY)


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def tiny(family):
    """A fresh tiny random model of the family (cheap: a fraction of a second)."""
    return tiny_model(family)


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A fresh dequantization cache for this test session (so the first load really converts)."""
    folder = tmp_path_factory.mktemp("rys-cache")
    old = os.environ.get("RYS_SEARCH_CACHE")
    os.environ["RYS_SEARCH_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("RYS_SEARCH_CACHE", None)
    else:
        os.environ["RYS_SEARCH_CACHE"] = old


@pytest.fixture(scope="session")
def smollm2(smollm2_cache):
    from rys_search.loading import load_model

    loaded = load_model("default", device="cpu")
    assert loaded.from_cache is False
    return loaded


@pytest.fixture(scope="session")
def saved_tiny(tmp_path_factory):
    """saved_tiny(family) -> the folder of a tiny model of that family saved as a HF checkpoint."""
    folders: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in folders:
            folder = tmp_path_factory.mktemp(f"tiny-{family}")
            save_tiny(folder, family)
            folders[family] = str(folder)
        return folders[family]

    return get
