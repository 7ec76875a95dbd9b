"""The engine's per-model call cost is remembered per model object, and forgotten with it."""

import gc

from rys_search.loading import wrap_model
from rys_search.scoring import engine
from tiny import tiny_model, tiny_tokenizer


def test_a_freed_models_call_cost_is_not_handed_to_the_next_model():
    before = len(engine._CALL_COSTS)
    small = wrap_model(tiny_model("llama"), tiny_tokenizer())
    small_cost = engine.call_cost(small)
    assert len(engine._CALL_COSTS) == before + 1
    del small
    gc.collect()
    assert len(engine._CALL_COSTS) == before  # nothing left for a new model that gets the same id()
    big = wrap_model(tiny_model("llama", hidden_size=16, intermediate_size=32, head_dim=4), tiny_tokenizer())
    assert engine.call_cost(big) != small_cost  # its own cost: fewer parameters, more tokens per call's worth


def test_layer_graphs_on_a_gpu_cap_the_call_cost():
    from types import SimpleNamespace

    model = tiny_model("llama")  # a few thousand parameters: the host-time estimate is huge
    layers = [None] * 4

    def cost(device, graphs):
        return engine.call_cost(SimpleNamespace(model=tiny_model("llama"), device=SimpleNamespace(type=device),
                                                runtime=SimpleNamespace(schedule=layers, graphs=graphs)))

    params = sum(p.numel() for p in model.parameters())
    uncapped = int(len(layers) * engine.LAYER_CALL_SECONDS * 4e14 / (2 * params))
    assert uncapped > engine.GRAPHED_CALL_COST_CAP
    assert cost("cuda", graphs=object()) == engine.GRAPHED_CALL_COST_CAP
    assert cost("cuda", graphs=None) == uncapped  # layers run eagerly: the host's time a call counts in full
    assert cost("cpu", graphs=None) == max(64, int(len(layers) * engine.LAYER_CALL_SECONDS * 1e11 / (2 * params)))
