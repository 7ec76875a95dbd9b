"""Fused RMSNorms compute what transformers' do, and only Llama-style ones are fused."""

import pytest
import torch
from torch import nn

from rys_search.norms import fuse_norms, is_llama_norm, unfuse_norms
from test_compiling import assert_close, every_layer, requests, scores
from tiny import TINY, tiny_model

# norms other than Llama's formula: Gemma's (1 + weight) in float32, OLMo 2's and gpt-oss's product in float32
OWN_NORM = {"gemma2", "gemma3", "olmo2", "gpt_oss"}


@pytest.mark.parametrize("family", sorted(TINY))
def test_which_families_are_fused(family):
    model = tiny_model(family)
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    assert norms
    swapped = fuse_norms(model)
    if family in OWN_NORM:
        assert swapped == 0
    else:  # every norm: two a layer (Qwen 3's per-head query and key norms too) and the final one
        assert swapped == len(norms) >= 2 * model.config.num_hidden_layers + 1
        assert fuse_norms(model) == 0  # already fused
    unfuse_norms(model)
    assert not any(type(m).__name__.startswith("Fused") for m in model.modules())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_fused_norm_equals_the_original(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    norm = LlamaRMSNorm(96, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
    x = (torch.randn(3, 17, 96) * 4).to(dtype)
    expected = norm(x)
    assert fuse_norms(norm) == 1 and type(norm).__name__ == "FusedLlamaRMSNorm"
    got = norm(x)
    assert got.dtype == dtype and torch.equal(got, expected)
    norm.variance_epsilon = 10.0  # the fused forward reads the module's own epsilon
    assert not torch.allclose(norm(x), expected, atol=1e-3)


def test_only_the_llama_formula_counts():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    class ProductInFloat32(LlamaRMSNorm):
        def forward(self, hidden_states):
            input_dtype = hidden_states.dtype
            hidden_states = hidden_states.to(torch.float32)
            variance = hidden_states.pow(2).mean(-1, keepdim=True)
            hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
            return (self.weight * hidden_states).to(input_dtype)

    class Inherited(LlamaRMSNorm):  # no forward of its own: not read, not fused
        pass

    class Commented(nn.Module):  # the same tokens, other comments and layout
        def __init__(self):
            super().__init__()
            self.weight, self.variance_epsilon = nn.Parameter(torch.ones(4)), 1e-6

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            input_dtype = hidden_states.dtype  # kept
            hidden_states = hidden_states.to(torch.float32)

            variance = hidden_states.pow(2).mean(-1, keepdim=True)
            hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
            return self.weight * hidden_states.to(input_dtype)

    assert is_llama_norm(LlamaRMSNorm) and is_llama_norm(Commented)
    assert not is_llama_norm(ProductInFloat32) and not is_llama_norm(Inherited) and not is_llama_norm(nn.LayerNorm)


def test_no_source_is_no_match(monkeypatch):
    """Without readable source (a build shipped as bytecode only) nothing counts as Llama's formula."""
    import inspect

    from transformers.models.llama.modeling_llama import LlamaRMSNorm  # imported before its source goes missing

    assert is_llama_norm(LlamaRMSNorm)

    def no_source(function):
        raise OSError("could not get source code")

    monkeypatch.setattr(inspect, "getsource", no_source)

    class Unreadable(nn.Module):
        def forward(self, hidden_states):
            return hidden_states

    assert not is_llama_norm(Unreadable)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_scores_with_fused_norms(tmp_path, family):
    loaded = every_layer(tmp_path, family, "bfloat16")
    assert loaded.runtime.fused_norms == 0  # on a CPU transformers' norms run
    reqs = requests(2)
    before = scores(loaded, reqs)
    assert fuse_norms(loaded.model) > 0
    assert_close(before, scores(loaded, reqs), atol=0, rtol=0)
