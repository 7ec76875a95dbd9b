"""The weight-shared runtime against an independent, physically duplicated model, per family."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from rys_search.architectures import UnsupportedFamily, supported_names
from rys_search.runtime import ScheduledModel
from rys_search.schedule import LayerSchedule, ScheduleError
from tiny import physically_duplicated, tiny_model

# Two blocks: 2-3 runs three times, 5 runs twice (6 -> 10 layers).
TWO_BLOCKS = LayerSchedule.parse("0-1,2-3x3,4,5x2")
PROMPT = torch.tensor([[5, 17, 33, 9, 60, 61, 7, 100, 12, 44, 3, 90], [8, 8, 21, 77, 5, 64, 31, 30, 29, 11, 99, 4]])


def logits(model, ids=PROMPT):
    with torch.no_grad():
        return model(ids).logits


MOE = ["gpt_oss", "mixtral", "qwen2_moe", "qwen3_moe"]


def test_every_required_family_has_data():
    assert {"llama", "qwen2", "qwen3", "mistral", "gemma3", "phi3", "gemma2", "olmo2", "granite", *MOE} <= set(
        supported_names())


def test_identity_gives_exactly_the_unmodified_logits(tiny):
    before = logits(tiny)
    runtime = ScheduledModel(tiny)
    runtime.set_schedule(LayerSchedule.identity(runtime.n_layers))
    assert torch.equal(logits(tiny), before)
    runtime.set_schedule(TWO_BLOCKS)
    assert not torch.equal(logits(tiny), before)
    runtime.reset()
    assert torch.equal(logits(tiny), before)
    assert runtime.layers is runtime._original_layers
    assert tiny.config.num_hidden_layers == 6


def test_two_blocks_match_a_physical_duplicate(tiny):
    reference = logits(physically_duplicated(tiny, TWO_BLOCKS.expand()))
    runtime = ScheduledModel(tiny)
    runtime.set_schedule(TWO_BLOCKS)
    assert torch.allclose(logits(tiny), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "gemma3", "gemma2", "gpt_oss", "qwen2_moe"])
def test_per_layer_settings_matter(family):
    """A duplicate that keeps layer types by position differs: the remapping is what makes it match."""
    model = tiny_model(family)
    original = list(model.config.layer_types)
    wrong = logits(physically_duplicated(model, TWO_BLOCKS.expand(), remap_layer_types=False))
    runtime = ScheduledModel(model)
    runtime.set_schedule(TWO_BLOCKS)
    assert (logits(model) - wrong).abs().max() > 1e-3
    assert model.config.layer_types == [original[src] for src in TWO_BLOCKS.expand()]
    runtime.reset()
    assert model.config.layer_types == original


def has_experts(layers) -> list[bool]:
    return [hasattr(layer.mlp, "experts") for layer in layers]


@pytest.mark.parametrize("family", ["qwen2_moe", "qwen3_moe"])
def test_moe_layer_kinds_follow_their_source(family):
    """Which layers have experts is fixed when a model is built; the remapped config says the same."""
    model = tiny_model(family)
    kinds = has_experts(model.model.layers)
    expected = [kinds[src] for src in TWO_BLOCKS.expand()]
    original = (list(model.config.mlp_only_layers), model.config.decoder_sparse_step)
    runtime = ScheduledModel(model)
    runtime.set_schedule(TWO_BLOCKS)
    assert has_experts(runtime.layers) == expected and True in expected and False in expected
    rebuilt = AutoModelForCausalLM.from_config(copy.deepcopy(model.config))
    assert has_experts(rebuilt.model.layers) == expected
    positional = copy.deepcopy(model.config)  # the original entries kept by position build other layers
    positional.mlp_only_layers, positional.decoder_sparse_step = original
    assert has_experts(AutoModelForCausalLM.from_config(positional).model.layers) != expected
    runtime.reset()
    assert (model.config.mlp_only_layers, model.config.decoder_sparse_step) == original


def routing(model, ids=PROMPT):
    """(router module, its input, top-k expert ids) for every router call of one forward, in order."""
    calls = []
    routers = {m for m in model.modules() if type(m).__name__.endswith("TopKRouter")}
    handles = [r.register_forward_hook(lambda mod, args, out: calls.append((mod, args[0], out[2]))) for r in routers]
    try:
        logits(model, ids)
    finally:
        for handle in handles:
            handle.remove()
    return calls


@pytest.mark.parametrize("family", MOE)
def test_a_repeated_moe_layer_routes_like_its_source(family):
    model = tiny_model(family)
    path = TWO_BLOCKS.expand()
    kinds = has_experts(model.model.layers)
    sparse = [pos for pos, src in enumerate(path) if kinds[src]]
    expected = routing(physically_duplicated(model, path))
    runtime = ScheduledModel(model)
    runtime.set_schedule(TWO_BLOCKS)
    got = routing(model)
    assert len(got) == len(expected) == len(sparse)
    for (_, _, ids), (_, _, reference) in zip(got, expected):  # each position picks the duplicate's experts
        assert torch.equal(ids, reference)
    for (router, x, ids), pos in zip(got, sparse):  # the source layer's router on the same input agrees
        (source,) = [m for m in runtime._original_layers[path[pos]].modules() if type(m).__name__.endswith("TopKRouter")]
        assert router is source and torch.equal(source(x)[2], ids)
    by_source: dict[int, list] = {}  # one layer's runs see other inputs and route differently: the check has teeth
    for (_, _, ids), pos in zip(got, sparse):
        by_source.setdefault(path[pos], []).append(ids)
    assert any(not torch.equal(runs[0], again) for runs in by_source.values() for again in runs[1:])


def test_weights_are_shared_not_copied(tiny):
    runtime = ScheduledModel(tiny)
    before = {p.data_ptr() for p in tiny.parameters()}
    runtime.set_schedule(TWO_BLOCKS)
    assert runtime.weight_copies() == 0
    assert {p.data_ptr() for p in tiny.parameters()} == before
    for pos, src in enumerate(TWO_BLOCKS.expand()):
        virtual = [p.data_ptr() for p in runtime.layers[pos].parameters()]
        assert virtual == [p.data_ptr() for p in runtime._original_layers[src].parameters()]


def test_one_cache_slot_per_virtual_layer(tiny):
    runtime = ScheduledModel(tiny)
    runtime.set_schedule(TWO_BLOCKS)
    with torch.no_grad():
        out = tiny(PROMPT, use_cache=True)
    assert len(out.past_key_values.layers) == len(TWO_BLOCKS)
    slots = [m.layer_idx for layer in runtime.layers for m in layer.modules() if hasattr(m, "layer_idx")]
    assert sorted(set(slots)) == list(range(len(TWO_BLOCKS)))
    assert [m.layer_idx for m in runtime._original_layers.modules() if hasattr(m, "layer_idx")][:1] == [0]


def test_generation_with_cache_equals_without(tiny):
    reference = physically_duplicated(tiny, TWO_BLOCKS.expand())
    runtime = ScheduledModel(tiny)
    runtime.set_schedule(TWO_BLOCKS)
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    ids = PROMPT[:1]
    cached = tiny.generate(ids, use_cache=True, **kwargs)
    assert torch.equal(cached, tiny.generate(ids, use_cache=False, **kwargs))
    assert torch.equal(cached, reference.generate(ids, use_cache=True, **kwargs))


def test_switching_schedules_is_reversible(tiny):
    runtime = ScheduledModel(tiny)
    a, b = LayerSchedule.parse("0-3,2-5"), TWO_BLOCKS
    expected_b = logits(physically_duplicated(tiny, b.expand()))
    runtime.set_schedule(a)
    first = logits(tiny)
    with runtime.using(b):
        assert runtime.schedule == b
        assert torch.allclose(logits(tiny), expected_b, atol=1e-5, rtol=0)
    assert runtime.schedule == a
    assert torch.equal(logits(tiny), first)


def test_out_of_range_schedule_is_refused(tiny):
    runtime = ScheduledModel(tiny)
    with pytest.raises(ScheduleError, match="out of range for a model with 6 layers"):
        runtime.set_schedule("0-6")
    assert runtime.schedule.is_identity(6)


def test_unsupported_family_is_refused_with_the_supported_names():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gpt2", n_embd=32, n_layer=2, n_head=2, vocab_size=64)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedFamily, match="'gpt2' is not supported; supported families: gemma2, gemma3, gpt_oss, granite, llama"):
        ScheduledModel(model)


def test_hidden_states_and_captured_inputs_follow_the_schedule(tiny):
    reference = physically_duplicated(tiny, TWO_BLOCKS.expand())
    with torch.no_grad():
        expected = reference(PROMPT, output_hidden_states=True).hidden_states
    runtime = ScheduledModel(tiny)
    runtime.set_schedule(TWO_BLOCKS)
    with runtime.capture_states([2, 4, 8, len(TWO_BLOCKS)]) as captured, torch.no_grad():
        got = tiny(PROMPT, output_hidden_states=True).hidden_states
    assert len(got) == len(TWO_BLOCKS) + 1
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    for pos in (2, 4, 8):  # positions 2 and 4 run the same weights: each hook fires once
        assert len(captured[pos]) == 1 and torch.allclose(captured[pos][0], expected[pos], atol=1e-5, rtol=0)
    with torch.no_grad():  # the last boundary is the last layer's output, before the final norm
        last = reference.model.layers[-1]
        kept = []
        handle = last.register_forward_hook(lambda m, a, out: kept.append(out[0] if isinstance(out, tuple) else out))
        reference(PROMPT)
        handle.remove()
    assert torch.allclose(captured[len(TWO_BLOCKS)][0], kept[0], atol=1e-5, rtol=0)
    assert all(len(layer._forward_pre_hooks) == 0 for layer in runtime.layers)
    assert all(len(layer._forward_hooks) == 1 for layer in runtime.layers)  # transformers' own hook only
    runtime.reset()
    with torch.no_grad():
        assert len(tiny(PROMPT, output_hidden_states=True).hidden_states) == 7
