import pytest
from hypothesis import given, settings, strategies as st

from rys_search.search.config import ConfigError, StudyConfig, default_config_path, load_config


def write(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_the_shipped_default_is_valid_and_overrides_apply():
    config = load_config()
    assert default_config_path().is_file()
    assert config.objectives == ("math", "eq", "reasoning") and config.sampler == "tpe"
    assert config.resolve(cuda=True).trials == 500 and config.resolve(cuda=False).trials == 12
    changed = load_config(overrides={"trials": 7, "sampler": "nsga2", "objectives": "math,eq", "name": "x"})
    assert (changed.trials, changed.sampler, changed.objectives, changed.name) == (7, "nsga2", ("math", "eq"), "x")
    assert changed.directions() == ["maximize", "maximize"]
    both = load_config(overrides={"extra_objectives": "fixed_point,added_layers"})
    assert both.objective_names()[-2:] == ["fixed_point", "added_layers"]
    assert both.directions()[-2:] == ["maximize", "minimize"]


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "a"\ncolour = "red"\n', "unknown keys colour"),
        ("[space]\nwidht = [1, 3]\n", r"\[space\]: unknown keys widht"),
        ('sampler = "cmaes"\n', "unknown sampler 'cmaes'"),
        ("trials = -3\n", "trials must be at least 1"),
        ('trials = "many"\n', "trials must be a whole number"),
        ("[space]\nwidth = [5, 2]\n", "space.width"),
        ("[space]\nextra_passes = [0, 2]\n", "space.extra_passes"),
        ("[space]\nwidth = [4, 8]\nmax_added_layers = 2\n", "no schedule fits"),
        ('sampler = "grid"\n[space]\nmax_blocks = 2\n', "grid sampler sweeps single blocks"),
        ('objectives = ["math", "math"]\n', "names one twice"),
        ('extra_objectives = ["speed"]\n', "extra_objectives may hold"),
        ('objectives = ["fixed_point"]\n', "fixed_point is an extra objective"),
        ('mode = "sample"\n', "unknown mode"),
        ('name = "a b"\n', "name must be"),
        ("seed = 1.5\n", "seed must be int"),
        ("[screen]\nmax_kl = -1.0\n", "screen thresholds must be positive"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_bad_configs_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


keys = st.sampled_from(["name", "model", "sampler", "trials", "seed", "mode", "limit", "colour", "space", "screen"])
values = st.one_of(st.integers(-5, 600), st.text(max_size=8), st.booleans(), st.lists(st.integers(0, 9), max_size=3),
                   st.dictionaries(st.sampled_from(["width", "max_blocks", "region", "bogus"]), st.integers(-2, 9), max_size=2))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=4))
def test_any_config_either_loads_valid_or_fails_with_a_config_error(tmp_path_factory, data):
    """Config loading never crashes with anything but ConfigError, and what loads is valid."""
    import tomllib

    def toml_value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(str(x) for x in v) + "]"
        return str(v)

    lines, tables = [], []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append(f"[{k}]\n" + "".join(f"{kk} = {toml_value(vv)}\n" for kk, vv in v.items()))
        else:
            lines.append(f"{k} = {toml_value(v)}")
    text = "\n".join(lines) + "\n" + "\n".join(tables)
    folder = tmp_path_factory.mktemp("cfg")
    path = folder / "s.toml"
    path.write_text(text)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pass
    try:
        config = load_config(path)
    except ConfigError:
        return
    assert isinstance(config, StudyConfig)
    assert config.space.width[0] <= config.space.width[1]
    assert config.sampler in ("tpe", "nsga2", "nsga3", "gp", "random", "grid")
