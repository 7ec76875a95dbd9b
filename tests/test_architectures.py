"""Family data files: the loader, and how a schedule remaps per-layer config entries."""

from importlib import resources

import pytest

from rys_search.architectures import _load, family_for, families

ENTRIES = {"num_hidden_layers": 6, "layer_types": list("SFSFSF"), "mlp_only_layers": [5], "decoder_sparse_step": 2}


def test_every_family_file_loads_and_names_a_layer_list():
    for family in families().values():
        assert family.layers.endswith("layers") and family.model_types and family.repeat_period >= 1


def test_layer_sets_are_listed_by_position_with_their_rule_written_out():
    family = family_for("qwen2_moe")
    order = [0, 1, 2, 3, 2, 3, 4, 5]
    remapped = family.remap(ENTRIES, order)
    # members of the source: 0, 2, 4 (sparse step 2 leaves even layers dense) and 5 (listed)
    assert remapped == {"num_hidden_layers": 8, "layer_types": list("SFSFSFSF"),
                        "mlp_only_layers": [0, 2, 4, 6, 7], "decoder_sparse_step": 1}
    assert family.remap(ENTRIES, range(6)) == ENTRIES  # identity: the entries as they were, rule included
    assert family_for("llama").remap(ENTRIES, order) == {"num_hidden_layers": 8, "layer_types": list("SFSFSFSF")}


def test_a_family_file_with_a_malformed_layer_set_is_refused():
    text = (resources.files("rys_search.architectures") / "qwen3_moe.toml").read_text()
    assert _load(text, "ok.toml").layer_sets
    with pytest.raises(ValueError, match="layer_sets must be"):
        _load(text.replace('{ step = "decoder_sparse_step" }', "{ stride = 2 }"), "bad.toml")
    with pytest.raises(ValueError, match="unknown keys"):
        _load('colour = "red"\n' + text, "bad.toml")
