"""Scoring tests run on the families whose forward differs in what scoring relies on, not on all.

Scoring calls the model as transformers does (its own head, softcapping and logit scaling
included) and feeds recorded hidden states back in; every family shares that path, so the
first five families and Granite (which scales inputs_embeds before the first layer) cover it
at a fraction of the time. RYS_SEARCH_TEST_ALL_FAMILIES=1 runs every family with a data file.
"""

import os

import pytest

from tiny import TINY

SCORED = sorted(TINY) if os.environ.get("RYS_SEARCH_TEST_ALL_FAMILIES") else [
    "gemma3", "granite", "llama", "mistral", "qwen2", "qwen3"]


@pytest.fixture(params=SCORED)
def family(request) -> str:
    return request.param
