"""The rotary in four passes computes transformers' bits, and only Llama-style modules are switched."""

import sys
import types

import pytest
import torch

from rys_search import rotary
from rys_search.rotary import fuse_rotary, is_llama_rotary, rotary_halves, unfuse_rotary
from test_compiling import assert_close, every_layer, requests, scores
from tiny import TINY, tiny_model

# rotaries other than Llama's: Phi-3's partial one, OLMo 2's in float32, gpt-oss's interleaved halves
OWN_ROTARY = {"phi3", "olmo2", "gpt_oss"}


@pytest.fixture(autouse=True)
def restored():
    yield
    unfuse_rotary()


def llama_rotary():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    return apply_rotary_pos_emb


@pytest.mark.parametrize("family", sorted(TINY))
def test_which_families_are_switched(family):
    model = tiny_model(family)
    attention = next(m for m in model.modules() if type(m).__name__.endswith("Attention"))
    module = sys.modules[type(attention).__module__]
    own = module.apply_rotary_pos_emb
    used = fuse_rotary(model)
    if family in OWN_ROTARY:
        assert used == 0 and module.apply_rotary_pos_emb is own
    else:
        assert used == 1 and module.apply_rotary_pos_emb._rys_rotary_base is own
        assert fuse_rotary(model) == 1 and module.apply_rotary_pos_emb._rys_rotary_base is own  # once only
    unfuse_rotary()
    assert module.apply_rotary_pos_emb is own


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["heads first", "tokens first"])
def test_the_same_bits_as_transformers(dtype, layout):
    """Random cos and sin whose halves differ (the formula must not lean on rotary's repeated halves),
    on query and key views laid out as the attention makes them."""
    torch.manual_seed(0)
    rows, tokens, heads, kv_heads, size = 3, 7, 4, 2, 16
    q = torch.randn(rows, tokens, heads * size).to(dtype).view(rows, tokens, heads, size)
    k = torch.randn(rows, tokens, kv_heads * size).to(dtype).view(rows, tokens, kv_heads, size)
    dim = 2
    if layout == "heads first":
        q, k, dim = q.transpose(1, 2), k.transpose(1, 2), 1
    cos, sin = torch.randn(rows, tokens, size).to(dtype), torch.randn(rows, tokens, size).to(dtype)
    expected = llama_rotary()(q, k, cos, sin, unsqueeze_dim=dim)
    got = rotary_halves(q, k, cos, sin, unsqueeze_dim=dim)
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == e.dtype and g.stride() == e.stride() and torch.equal(g, e)
    assert not torch.equal(rotary_halves(q, k, sin, cos, unsqueeze_dim=dim)[0], expected[0])


LLAMA_WORDS = (
    "import torch\n"
    "def rotate_half(x):\n"
    "    x1 = x[..., : x.shape[-1] // 2]  # a comment\n"
    "    x2 = x[..., x.shape[-1] // 2 :]\n"
    "    return torch.cat((-x2, x1), dim=-1)\n"
    "def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):\n"
    "    cos = cos.unsqueeze(unsqueeze_dim)\n"
    "    sin = sin.unsqueeze(unsqueeze_dim)\n\n"
    "    q_embed = (q * cos) + (rotate_half(q) * sin)\n"
    "    k_embed = (k * cos) + (rotate_half(k) * sin)\n"
    "    return q_embed, k_embed\n")
INTERLEAVED = LLAMA_WORDS.replace("x[..., : x.shape[-1] // 2]", "x[..., ::2]").replace(
    "x[..., x.shape[-1] // 2 :]", "x[..., 1::2]")


def module_from(folder, name, source):
    """A module loaded from a file, so that its functions' source can be read."""
    import importlib.util

    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    made = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(made)
    return made


def test_other_formulas_do_not_count(tmp_path):
    assert is_llama_rotary(sys.modules[llama_rotary().__module__])
    assert is_llama_rotary(module_from(tmp_path, "same_words", LLAMA_WORDS))  # comments and layout aside
    assert not is_llama_rotary(module_from(tmp_path, "interleaved", INTERLEAVED))
    assert not is_llama_rotary(types.ModuleType("no_rotary"))
    unreadable = types.ModuleType("unreadable")  # code without a source file: never a match
    exec(compile(LLAMA_WORDS, "<unreadable>", "exec"), unreadable.__dict__)  # noqa: S102
    assert not is_llama_rotary(unreadable)


def test_fallbacks_run_transformers_own(monkeypatch):
    """An odd head size, and a trace by torch.compile, take the original function."""
    calls = []
    monkeypatch.setattr(rotary, "rotary_halves", lambda *a, **k: calls.append(1) or llama_rotary()(*a, **k))
    switched = rotary._switched(llama_rotary())
    q = torch.randn(1, 2, 3, 8)
    switched(q, q, torch.randn(1, 3, 8), torch.randn(1, 3, 8))
    assert calls == [1]
    odd = torch.randn(1, 2, 3, 7)
    switched(odd, odd, torch.randn(1, 3, 7), torch.randn(1, 3, 7))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    switched(q, q, torch.randn(1, 3, 8), torch.randn(1, 3, 8))
    assert calls == [1]


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_scores_with_the_switched_rotary(tmp_path, family, monkeypatch):
    """The engine's scores, every schedule, bit for bit, and the switched function did the work."""
    loaded = every_layer(tmp_path, family, "bfloat16")
    assert loaded.runtime.fused_rotary == 0  # on a CPU transformers' rotary runs
    reqs = requests(2)
    before = scores(loaded, reqs)
    calls = []
    halves = rotary.rotary_halves
    monkeypatch.setattr(rotary, "rotary_halves", lambda *a, **k: calls.append(1) or halves(*a, **k))
    assert fuse_rotary(loaded.model) == 1
    assert_close(before, scores(loaded, reqs), atol=0, rtol=0)
    assert len(calls) >= loaded.n_layers
