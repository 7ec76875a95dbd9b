"""Layer calls through graphs (static buffers, a KV-cache stand-in, replays) score what eager layers score.

On this CPU the graphs are emulated (graphs.py: a replay calls the captured function again on the
same static buffers), so the buffers, the copies in and out, the shared hidden-state buffer and the
cache's bookkeeping are what is tested; the GPU's own capture is checked by benchmarks/layer_graphs.py.
"""

import logging

import pytest
import torch

from rys_search.graphs import LayerGraphs, graph_setting
from rys_search.loading import load_model
from rys_search.schedule import LayerSchedule
from rys_search.scoring.engine import Request
from rys_search.scoring.memory import shrink_batches
from test_compiling import assert_close, requests, scores
from tiny import TINY, save_tiny

START = list(range(40, 52))  # a shared start of 12 tokens (engine._Start) where no sliding window forbids it


def with_start(reqs):
    return [Request(START + list(r.ids), [(p + len(START), w) for p, w in r.targets],
                    prefix=r.prefix + len(START) if r.prefix else 0) for r in reqs]


def pair(folder):
    """The same model loaded twice: eager layers, and layers through emulated graphs."""
    eager = load_model(str(folder), device="cpu")
    graphed = load_model(str(folder), device="cpu")
    graphed.runtime.use_graphs(LayerGraphs("cpu", emulate=True))
    return eager, graphed


@pytest.mark.parametrize("family", sorted(TINY))
def test_graphed_layers_score_as_eager_ones(tmp_path, family):
    save_tiny(tmp_path, family)
    eager, graphed = pair(tmp_path)
    assert eager.runtime.graphs is None  # a CPU runs eagerly unless told
    for reqs in (requests(0), with_start(requests(1))):  # prefix cache on: recorded states feed later schedules
        assert_close(scores(eager, reqs), scores(graphed, reqs), atol=0, rtol=0)  # the same kernels: bit for bit
    counts = graphed.runtime.graphs.counts
    assert counts["captured"] > 0 and counts["replayed"] > 2 * counts["captured"]


def test_recorded_states_and_the_cache_are_eager_ones(tmp_path):
    save_tiny(tmp_path, "llama")
    eager, graphed = pair(tmp_path)
    ids = torch.randint(3, 90, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    tail = torch.randint(3, 90, (3, 2), generator=torch.Generator().manual_seed(1))
    got = []
    for loaded in (eager, graphed):
        runtime = loaded.runtime
        runtime.prefix_cache = None
        runtime.set_schedule("0-3,1-5,2-5")
        seen = []
        for _ in range(3):  # the first call of a signature warms up, the next captures, the third replays
            with torch.no_grad():
                out, states = runtime.forward(None, capture=[0, 4, 8, len(runtime.schedule)], input_ids=ids,
                                              attention_mask=mask, position_ids=positions, use_cache=True)
                cache = out.past_key_values
                keys = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
                more, _ = runtime.forward(None, input_ids=tail, past_key_values=cache, use_cache=True,
                                          attention_mask=torch.cat([mask, torch.ones_like(tail)], 1),
                                          position_ids=positions[:, -1:] + 1 + torch.arange(2))
            seen.append((out.logits, states, keys, more.logits, [(l.keys, l.values) for l in cache.layers]))
        got.append(seen)
    for (logits, states, keys, more, grown), (logits2, states2, keys2, more2, grown2) in zip(*got):
        assert torch.equal(logits, logits2) and torch.equal(more, more2)
        assert states.keys() == states2.keys() and all(torch.equal(states[q], states2[q]) for q in states)
        assert all(torch.equal(a, b) for pair_ in zip(keys, keys2) for a, b in zip(*pair_))
        assert all(torch.equal(a, b) for pair_ in zip(grown, grown2) for a, b in zip(*pair_))
    # the states returned are the runner's own copies: the next replay leaves them as they were
    first = got[1][0][1]
    assert all(torch.equal(first[q], got[0][0][1][q]) for q in first)
    assert graphed.runtime.graphs.counts["replayed"] > 0


def test_calls_it_cannot_replay_run_eagerly(tmp_path):
    save_tiny(tmp_path, "llama")
    eager, graphed = pair(tmp_path)
    ids = torch.randint(3, 90, (2, 6), generator=torch.Generator().manual_seed(0))
    graphs = graphed.runtime.graphs
    for _ in range(3):
        with torch.no_grad():  # transformers' own hidden-state hooks would keep the graphs' buffers
            a = eager.runtime.forward(None, input_ids=ids, output_hidden_states=True)[0]
            b = graphed.runtime.forward(None, input_ids=ids, output_hidden_states=True)[0]
        assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states))
    assert sum(graphs.counts.values()) == 0  # not even described
    with torch.no_grad(), graphs.active():  # an argument it cannot describe: eager, counted
        layer = graphed.runtime.layers[0]
        hidden = torch.randn(2, 6, graphed.runtime.config.hidden_size)
        layer(hidden, position_embeddings=graphed.model.model.rotary_emb(hidden, torch.arange(6)[None]),
              attention_mask=None, odd=object())
    assert graphs.counts["eager"] == 1 and graphs.counts["replayed"] == 0


def scored_pair(folder, family, seed):
    """pair() of a tiny model of the family, both scored once (equal): the graphed one, the requests, the scores."""
    save_tiny(folder, family)
    eager, graphed = pair(folder)
    reqs = with_start(requests(seed))
    expected = scores(eager, reqs)
    assert_close(expected, scores(graphed, reqs), atol=0, rtol=0)
    return graphed, reqs, expected


def test_cleared_graphs_start_again_and_running_out_of_memory_clears_them(tmp_path, caplog):
    graphed, reqs, expected = scored_pair(tmp_path, "qwen2", 2)
    graphs = graphed.runtime.graphs
    assert graphs._signatures and graphs._graphs
    with caplog.at_level(logging.WARNING):
        shrink_batches(graphed, RuntimeError("CUDA out of memory"))
    assert not graphs._signatures and not graphs._graphs
    captured = graphs.counts["captured"]
    assert_close(expected, scores(graphed, reqs), atol=0, rtol=0)
    assert graphs.counts["captured"] > captured  # captured again for the new buffers


def test_the_setting_and_when_graphs_are_set_up(tmp_path, monkeypatch):
    monkeypatch.delenv("RYS_SEARCH_CUDA_GRAPHS", raising=False)
    assert graph_setting(torch.device("cuda")) and not graph_setting(torch.device("cpu"))
    for off in ("0", "off", "false", "no"):
        monkeypatch.setenv("RYS_SEARCH_CUDA_GRAPHS", off)
        assert not graph_setting(torch.device("cuda"))
    save_tiny(tmp_path, "llama")
    loaded = load_model(str(tmp_path), device="cpu")
    loaded.runtime.set_schedule("0-2,1-5")  # clones made: graphs now would miss them
    with pytest.raises(RuntimeError, match="before"):
        loaded.runtime.use_graphs(LayerGraphs("cpu", emulate=True))
    loaded.runtime.set_schedule(LayerSchedule.identity(loaded.n_layers))


def test_compiled_layers_through_graphs_score_as_compiled_ones(tmp_path, caplog):
    """On a GPU layers are compiled, then graphed (ScheduledModel's order): both classes stack."""
    from rys_search.compiling import compile_layers

    torch._dynamo.reset()
    save_tiny(tmp_path, "qwen3")
    compiled, both = pair(tmp_path)
    both.runtime.use_graphs(None)  # set up again below, after compiling, as the runtime does
    assert not any(type(m).__name__.startswith("Graphed") for m in both.model.modules())
    for loaded in (compiled, both):
        compile_layers(loaded.runtime._original_layers, backend="aot_eager")
    both.runtime.use_graphs(LayerGraphs("cpu", emulate=True))
    assert type(both.runtime.layers[0]).__mro__[1].__name__.startswith("Compiled")
    reqs = requests(3)
    with caplog.at_level(logging.WARNING):
        assert_close(scores(compiled, reqs), scores(both, reqs), atol=1e-6)
    assert not caplog.records
    assert both.runtime.graphs.counts["replayed"] > 0


def test_a_cache_read_once_is_left_as_it_was(tmp_path):
    save_tiny(tmp_path, "llama")
    eager, graphed = pair(tmp_path)
    ids = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    tail = torch.randint(3, 90, (2, 3), generator=torch.Generator().manual_seed(1))
    got = []
    for loaded in (eager, graphed):
        runtime = loaded.runtime
        runtime.prefix_cache = None
        logits = []
        for _ in range(3):
            with torch.no_grad():
                cache = runtime.forward(None, input_ids=ids, use_cache=True)[0].past_key_values
                cache.rys_read_once = True
                out, _ = runtime.forward(None, input_ids=tail, past_key_values=cache, use_cache=True,
                                         position_ids=7 + torch.arange(3)[None])
            logits.append(out.logits)
        got.append((logits, [layer.keys.shape[-2] for layer in cache.layers]))
    assert all(torch.equal(a, b) for a, b in zip(got[0][0], got[1][0]))
    assert got[0][1] == [10] * 6  # eager layers grow it all the same
    assert got[1][1] == [7] * 6  # the last call was replayed: the prompt's 7 tokens, as before it


def test_past_the_most_signatures_it_starts_again(tmp_path, monkeypatch):
    from rys_search import graphs as graphs_module

    graphed, reqs, expected = scored_pair(tmp_path, "llama", 4)
    graphs = graphed.runtime.graphs
    made = len(graphs._signatures)
    assert made > 2
    monkeypatch.setattr(graphs_module, "MAX_SIGNATURES", 2)
    cleared = []
    monkeypatch.setattr(graphs, "clear", lambda: (cleared.append(1), LayerGraphs.clear(graphs)))
    graphs.clear()
    cleared.clear()
    assert_close(expected, scores(graphed, reqs), atol=0, rtol=0)
    assert cleared and len(graphs._signatures) <= 2


def test_under_inference_mode(tmp_path):
    """Tensors made under inference_mode have no version counter: they are copied in every time."""
    save_tiny(tmp_path, "qwen2")
    eager, graphed = pair(tmp_path)
    for loaded in (eager, graphed):
        loaded.runtime.prefix_cache = None
    ids = torch.randint(3, 90, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(3):
            a = eager.runtime.forward(None, input_ids=ids)[0].logits
            b = graphed.runtime.forward(None, input_ids=ids)[0].logits
            assert torch.equal(a, b)
    assert graphed.runtime.graphs.counts["replayed"] > 0
